// DOM helpers. Everything the dashboard shows from the server goes through text nodes and
// attributes set one by one: job arguments, error messages and names are hostile input, and
// no code here hands a string to the HTML parser (a test greps the modules for the APIs that do).

/**
 * Build an element: h("a", {href: "/x", class: "link", onclick: fn}, "text", child, ...).
 * Attribute values are set with setAttribute (never as markup); functions under on* keys
 * become event listeners; null, undefined and false children are skipped; arrays are
 * flattened; anything else becomes a text node.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) {
      if (typeof value !== "function") throw new TypeError("event handlers must be functions");
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replace every child of el with children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A value as indented JSON in a <pre> (text, never markup). */
export function jsonBlock(value) {
  return h("pre", { class: "json" }, JSON.stringify(value === undefined ? null : value, null, 2));
}

/** An ISO time as the viewer's local time, with the exact value as a tooltip. */
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return h("span", {}, String(iso));
  return h("time", { datetime: iso, title: iso }, d.toLocaleString());
}

/** "12 s ago", "in 3 min": how far an ISO time is from now. */
export function ago(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const ms = new Date(iso).getTime() - Date.now();
  if (Number.isNaN(ms)) return h("span", {}, String(iso));
  const abs = Math.abs(ms) / 1000;
  const [n, unit] =
    abs < 60 ? [abs, "s"] : abs < 3600 ? [abs / 60, "min"] : abs < 86400 ? [abs / 3600, "h"] : [abs / 86400, "d"];
  const text = `${Math.round(n)} ${unit}`;
  return h("time", { datetime: iso, title: iso }, ms < 0 ? `${text} ago` : `in ${text}`);
}

/** A coloured label for a job, queue, worker or workflow state. */
export function badge(state) {
  const s = String(state ?? "unknown");
  return h("span", { class: `badge state-${s.replace(/[^a-z_-]/gi, "")}` }, s);
}

/** A number with thousands separators. */
export function num(n) {
  return typeof n === "number" ? n.toLocaleString() : n === undefined || n === null ? "—" : String(n);
}

/** A table: columns is [[heading, cell(row) -> node|string], ...]. */
export function table(columns, rows, { empty = "Nothing here.", rowAttrs } = {}) {
  if (!rows || rows.length === 0) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", { scope: "col" }, title)))),
      h(
        "tbody",
        {},
        rows.map((row) => h("tr", rowAttrs ? rowAttrs(row) : {}, columns.map(([, cell]) => h("td", {}, cell(row))))),
      ),
    ),
  );
}

/** A button that asks again before it acts: the first click shows a confirmation bar. */
export function confirmButton(label, question, action, { danger = true } = {}) {
  const wrap = h("span", { class: "confirm" });
  const ask = () => {
    replace(
      wrap,
      h("span", { class: "confirm-question" }, question),
      h("button", { type: "button", class: danger ? "danger" : "primary", onclick: run }, `Confirm ${label.toLowerCase()}`),
      h("button", { type: "button", onclick: reset }, "Keep"),
    );
  };
  const run = async (event) => {
    event.target.disabled = true;
    try {
      await action();
    } finally {
      reset();
    }
  };
  const reset = () => replace(wrap, h("button", { type: "button", class: danger ? "danger" : "", onclick: ask }, label));
  reset();
  return wrap;
}

/** A button that runs an async action, disabled while it runs. */
export function actionButton(label, action, { cls = "" } = {}) {
  return h("button", {
    type: "button",
    class: cls,
    onclick: async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      try {
        await action();
      } finally {
        button.disabled = false;
      }
    },
  }, label);
}
