// Starts Swagger UI on this server's OpenAPI document (GET /ojs/docs).
//
// A file rather than an inline script so that the page's Content-Security-Policy can forbid
// inline scripts. The document is fetched here, not by Swagger UI, so that a server with
// authentication can ask for a key: openapi.json needs one (any role) while this page does
// not. The key lives in this page's memory only (never in storage) and is sent only to this
// origin, on the document request and on "Try it out" requests.
(function () {
  "use strict";

  var mount = document.getElementById("swagger-ui");
  var form = document.getElementById("ojs-docs-auth");
  var reason = document.getElementById("ojs-docs-auth-reason");
  var keyInput = document.getElementById("ojs-docs-key");
  var errorBox = document.getElementById("ojs-docs-error");
  // Relative to the page, so that a mount prefix (or a proxy's) is kept.
  var documentUrl = new URL(mount.getAttribute("data-openapi-url"), document.baseURI).href;
  var key = null;

  function showError(message) {
    // textContent, never innerHTML: a message may echo what the server said.
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function askForKey(status) {
    reason.textContent =
      status === 403
        ? "This key may not read the API document; try another."
        : key
          ? "The server did not accept this key."
          : "This server needs a key (any role) to read its API document.";
    form.hidden = false;
    keyInput.focus();
  }

  function render(spec) {
    form.hidden = true;
    errorBox.hidden = true;
    window.ui = window.SwaggerUIBundle({
      spec: spec,
      dom_id: "#swagger-ui",
      deepLinking: true,
      // No calls to the public validator service, and no configuration from the query
      // string (the source of past Swagger UI XSS reports).
      validatorUrl: null,
      queryConfigEnabled: false,
      presets: [window.SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      requestInterceptor: function (request) {
        // A value set with Swagger UI's own "Authorize" button wins.
        if (key && !request.headers.Authorization) {
          request.headers.Authorization = "Bearer " + key;
        }
        return request;
      },
    });
  }

  function load() {
    var headers = { Accept: "application/json" };
    if (key) {
      headers.Authorization = "Bearer " + key;
    }
    // credentials: same-origin lets a host application's session cookie authenticate.
    fetch(documentUrl, { headers: headers, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          askForKey(response.status);
          return null;
        }
        if (!response.ok) {
          throw new Error("GET " + documentUrl + " answered " + response.status);
        }
        return response.json().then(render);
      })
      .catch(function (error) {
        showError("The API document could not be loaded: " + error.message);
      });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    key = keyInput.value.trim() || null;
    keyInput.value = "";
    load();
  });

  if (typeof window.SwaggerUIBundle !== "function") {
    showError("Swagger UI did not load (docs/swagger-ui-bundle.js).");
    return;
  }
  load();
})();
