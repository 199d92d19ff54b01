// Pieces several views share: pagination, state lists, the admin API's base path.

import { base, seg } from "../api.js";
import { h, num } from "../dom.js";

export const ADMIN = "/ojs/v1/admin";
export const JOB_STATES = ["available", "active", "scheduled", "retryable", "pending", "completed", "discarded", "cancelled"];
export const PER_PAGE = 25;

/** A link to a dashboard path, followed without a reload. */
export function navLink(path, text, attrs = {}) {
  return h("a", { href: base + path, "data-nav": "", ...attrs }, text);
}

/** A link to a job's page. */
export function jobLink(id) {
  return navLink(`/jobs/${seg(id)}`, id, { class: "mono" });
}

/** "Page 2 of 5 · 113 items" with previous and next buttons. */
export function pager(pagination, onPage) {
  const total = pagination?.total ?? 0;
  const page = pagination?.page ?? 1;
  const perPage = pagination?.per_page || PER_PAGE;
  const pages = Math.max(1, Math.ceil(total / perPage));
  return h(
    "div",
    { class: "pager" },
    h("button", { type: "button", disabled: page <= 1, onclick: () => onPage(page - 1) }, "‹ Previous"),
    h("span", {}, `Page ${page} of ${pages} · ${num(total)} ${total === 1 ? "item" : "items"}`),
    h("button", { type: "button", disabled: page >= pages, onclick: () => onPage(page + 1) }, "Next ›"),
  );
}

/** A <select> of options, the current one selected. */
export function select(name, options, current, label) {
  return h(
    "select",
    { name, "aria-label": label || name },
    options.map(([value, text]) => h("option", { value, selected: value === current }, text)),
  );
}

/** The query string of a filter object, without empty values. */
export function queryString(values) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** A section with a heading and optional tools on the right. */
export function section(title, tools, ...children) {
  return h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, title), tools || null), ...children);
}

/** The counts of one queue or the totals, as cells in JOB_STATES order. */
export function countCells(counts) {
  return JOB_STATES.map((s) => [s, (row) => num((counts(row) || {})[s] ?? 0)]);
}
