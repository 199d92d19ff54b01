// Applies the saved colour theme before the first paint (a classic script in <head>: the
// CSP forbids inline scripts, and a module would run after the page was drawn once).
(function () {
  "use strict";
  var saved = null;
  try {
    saved = window.localStorage.getItem("ojs.theme");
  } catch (e) {
    saved = null;
  }
  if (saved === "light" || saved === "dark") {
    document.documentElement.setAttribute("data-theme", saved);
  }
})();
