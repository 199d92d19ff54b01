// The dashboard's entry module: the layout, a small router (one view per URL under
// /ojs/admin), auto-refresh and live updates. Views are modules under views/; each returns
// {title, node, refresh, onEvent?, dispose?} and fills its node from the admin API.

import { authMode, base } from "./api.js";
import { h, replace } from "./dom.js";
import { subscribe } from "./live.js";
import { notify, toasts } from "./notify.js";
import { cronView } from "./views/cron.js";
import { deadLetterView } from "./views/deadletter.js";
import { jobView } from "./views/job.js";
import { jobsView } from "./views/jobs.js";
import { overviewView } from "./views/overview.js";
import { queuesView } from "./views/queues.js";
import { settingsView } from "./views/settings.js";
import { workersView } from "./views/workers.js";
import { workflowView, workflowsView } from "./views/workflows.js";

const ROUTES = [
  [/^\/?$/, overviewView],
  [/^\/queues\/?$/, queuesView],
  [/^\/jobs\/?$/, jobsView],
  [/^\/jobs\/([^/]+)\/?$/, jobView],
  [/^\/dead-letter\/?$/, deadLetterView],
  [/^\/workers\/?$/, workersView],
  [/^\/cron\/?$/, cronView],
  [/^\/workflows\/?$/, workflowsView],
  [/^\/workflows\/([^/]+)\/?$/, workflowView],
  [/^\/settings\/?$/, settingsView],
];

const NAV = [
  ["", "Overview"],
  ["/queues", "Queues"],
  ["/jobs", "Jobs"],
  ["/dead-letter", "Dead letter"],
  ["/workers", "Workers"],
  ["/cron", "Cron"],
  ["/workflows", "Workflows"],
  ["/settings", "Settings"],
];

const REFRESH_KEY = "ojs.refresh";
const state = { view: null, refreshing: false, pending: false, timer: null, live: "off" };

const main = h("main", { id: "view", tabindex: "-1" });
const liveBadge = h("span", { class: "live off", title: "Live updates (server-sent events)" }, "offline");
const refreshToggle = h("input", { type: "checkbox", id: "auto-refresh" });
const themeButton = h("button", { type: "button", class: "ghost", title: "Switch colour theme", onclick: toggleTheme });
const navList = h("ul", { class: "nav" });

/** Go to a dashboard path ("/jobs?state=active") without reloading the page. */
export function navigate(path, { replaceState = false } = {}) {
  const url = base + path;
  if (replaceState) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

function currentPath() {
  const path = location.pathname;
  return path.startsWith(base) ? path.slice(base.length) : "/";
}

function layout() {
  for (const [path, label] of NAV) {
    navList.appendChild(h("li", {}, h("a", { href: base + path, "data-nav": "", "data-path": path || "/" }, label)));
  }
  refreshToggle.checked = localStorage.getItem(REFRESH_KEY) !== "off";
  refreshToggle.addEventListener("change", () => {
    localStorage.setItem(REFRESH_KEY, refreshToggle.checked ? "on" : "off");
    schedule();
  });
  const logout =
    authMode === "session"
      ? h("form", { method: "post", action: `${base}/logout`, class: "logout" }, h("button", { type: "submit", class: "ghost" }, "Sign out"))
      : null;
  const header = h(
    "header",
    { class: "top" },
    h("a", { class: "brand", href: base, "data-nav": "" }, h("img", { src: `${base}/static/favicon.svg`, alt: "" }), "OJS"),
    h("nav", { "aria-label": "Dashboard" }, navList),
    h(
      "div",
      { class: "tools" },
      liveBadge,
      h("label", { class: "toggle", for: "auto-refresh" }, refreshToggle, " Auto-refresh"),
      themeButton,
      logout,
    ),
  );
  replace(document.getElementById("app"), header, main, toasts);
  document.addEventListener("click", (event) => {
    const a = event.target.closest("a[data-nav]");
    if (!a || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    const url = new URL(a.href);
    if (url.origin !== location.origin || !url.pathname.startsWith(base)) return;
    event.preventDefault();
    navigate(url.pathname.slice(base.length) + url.search);
  });
  window.addEventListener("popstate", render);
  document.addEventListener("visibilitychange", schedule);
  showTheme();
}

async function render() {
  state.view?.dispose?.();
  const path = currentPath();
  let view = null;
  for (const [pattern, make] of ROUTES) {
    const match = pattern.exec(path);
    if (match) {
      view = make({ params: match.slice(1).map(decodeURIComponent), query: new URLSearchParams(location.search), navigate, notify });
      break;
    }
  }
  if (!view) {
    view = { title: "Not found", node: h("section", {}, h("h1", {}, "Not found"), h("p", {}, "No dashboard view has this address.")) };
  }
  state.view = view;
  document.title = `${view.title} · OJS dashboard`;
  for (const a of navList.querySelectorAll("a")) {
    const p = a.dataset.path;
    const active = p === "/" ? path === "/" || path === "" : path.startsWith(p);
    if (active) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  replace(main, view.node);
  await refresh();
  schedule();
}

/** Re-fetch the current view's data (one refresh at a time; a request while one runs
 * queues exactly one more). */
async function refresh() {
  const view = state.view;
  if (!view?.refresh) return;
  if (state.refreshing) {
    state.pending = true;
    return;
  }
  state.refreshing = true;
  try {
    await view.refresh();
    main.dataset.loaded = "true";
  } catch (error) {
    notify(error.message || String(error), "error");
  } finally {
    state.refreshing = false;
    if (state.pending && view === state.view) {
      state.pending = false;
      refresh();
    }
  }
}

function schedule() {
  clearInterval(state.timer);
  state.timer = null;
  if (refreshToggle.checked && document.visibilityState === "visible") {
    state.timer = setInterval(refresh, 5000);
  }
}

let liveDebounce = null;
function onLiveEvent(event) {
  state.view?.onEvent?.(event);
  // A burst of events makes one refresh, not one per event.
  if (liveDebounce === null) {
    liveDebounce = setTimeout(() => {
      liveDebounce = null;
      refresh();
    }, 400);
  }
}

function onLiveStatus(status) {
  state.live = status;
  liveBadge.className = `live ${status}`;
  liveBadge.textContent = status === "live" ? "live" : status === "reconnecting" ? "reconnecting" : "offline";
}

function showTheme() {
  const dark =
    document.documentElement.dataset.theme === "dark" ||
    (!document.documentElement.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
  themeButton.textContent = dark ? "☀ Light" : "☾ Dark";
}

function toggleTheme() {
  const html = document.documentElement;
  const dark =
    html.dataset.theme === "dark" || (!html.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
  html.dataset.theme = dark ? "light" : "dark";
  localStorage.setItem("ojs.theme", html.dataset.theme);
  showTheme();
}

layout();
render();
subscribe("all", onLiveEvent, onLiveStatus);
