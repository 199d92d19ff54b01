// The JSON API client. Same-origin fetches with the session cookie (or whatever the host
// application authenticates) and the X-OJS-Dashboard header, which the server requires of
// every cookie-authorised change: a cross-site form cannot send it.

const html = document.documentElement;
/** The mount prefix ("" or "/jobs-api"): every URL is built from it. */
export const root = html.dataset.root || "";
/** "session" (API keys sign in), "open" (no authentication) or "external". */
export const authMode = html.dataset.auth || "open";
/** The dashboard's own base URL. */
export const base = `${root}/ojs/admin`;
export const V1 = "/ojs/v1";

/** An error answered by the server, with the OJS error body when there is one. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** Where the browser goes when the session is missing or expired. */
export function loginUrl() {
  const here = location.pathname.slice(root.length) + location.search;
  return `${base}/login?next=${encodeURIComponent(here)}`;
}

/** A URL path segment from untrusted text (ids and names). */
export const seg = (value) => {
  const text = String(value);
  // URL parsers treat "." and ".." (encoded or not) as dot segments: such a name would send
  // the request to another route, so it is refused rather than sent.
  if (text === "." || text === "..") throw new Error(`cannot address ${JSON.stringify(text)} in a URL`);
  return encodeURIComponent(text);
};

/**
 * Call the API: api("/ojs/v1/admin/stats"), api(path, {query: {page: 2}}),
 * api(path, {method: "POST", body: {...}}). Resolves to the parsed JSON body.
 */
export async function api(path, { method = "GET", body, query } = {}) {
  const url = new URL(root + path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  }
  const headers = { Accept: "application/json", "X-OJS-Dashboard": "1" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.status === 401 && authMode === "session") {
    location.assign(loginUrl());
  }
  if (!response.ok) {
    const message = data?.error?.message || `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message, data);
  }
  return data;
}
