// Toast messages for the results of actions (text only).

import { h } from "./dom.js";

export const toasts = h("div", { class: "toasts", role: "status", "aria-live": "polite" });

/** Show a message for a few seconds; kind is "info", "ok" or "error". */
export function notify(message, kind = "info") {
  const toast = h("div", { class: `toast ${kind}` }, String(message));
  toasts.appendChild(toast);
  setTimeout(() => toast.remove(), kind === "error" ? 8000 : 4000);
}
