// /ojs/admin/workers: each worker's state, last heartbeat and running jobs; quiet and
// terminate (a directive the worker gets with its next heartbeat).

import { api, seg } from "../api.js";
import { actionButton, ago, badge, confirmButton, h, num, replace, table, time } from "../dom.js";
import { ADMIN, PER_PAGE, pager, queryString } from "./common.js";

export function workersView({ query, navigate, notify }) {
  const page = Number(query.get("page")) || 1;
  const summary = h("div", { class: "stats" });
  const body = h("div");
  const node = h("div", {}, h("h1", {}, "Workers"), summary, body);

  async function directive(id, action) {
    await api(`${ADMIN}/workers/${seg(id)}/${action}`, { method: "POST" });
    notify(`Worker ${id}: ${action} sent`, "ok");
    await refresh();
  }

  async function refresh() {
    const list = await api(`${ADMIN}/workers`, { query: { page, per_page: PER_PAGE } });
    const s = list.summary || {};
    replace(
      summary,
      ["total", "running", "quiet", "stale"].map((k) =>
        h("div", { class: `stat state-${k}` }, h("div", { class: "stat-value" }, num(s[k] ?? 0)), h("div", { class: "stat-label" }, k)),
      ),
    );
    replace(
      body,
      table(
        [
          ["Id", (w) => h("span", { class: "mono" }, w.id)],
          ["Host", (w) => w.hostname || "—"],
          ["State", (w) => badge(w.state)],
          ["Queues", (w) => (w.queues || []).join(", ") || "—"],
          ["Concurrency", (w) => num(w.concurrency)],
          ["Running jobs", (w) => num(Array.isArray(w.active_jobs) ? w.active_jobs.length : w.active_jobs)],
          ["Last heartbeat", (w) => ago(w.last_heartbeat_at)],
          ["Started", (w) => time(w.started_at)],
          [
            "",
            (w) =>
              w.state === "running"
                ? h(
                    "div",
                    { class: "actions" },
                    actionButton("Quiet", () => directive(w.id, "quiet")),
                    confirmButton("Terminate", "Stop this worker?", () => directive(w.id, "terminate")),
                  )
                : w.state === "quiet"
                  ? confirmButton("Terminate", "Stop this worker?", () => directive(w.id, "terminate"))
                  : null,
          ],
        ],
        list.items,
        { empty: "No worker has sent a heartbeat yet.", rowAttrs: (w) => ({ "data-worker": w.id }) },
      ),
      pager(list.pagination, (p) => navigate(`/workers${queryString({ page: p > 1 ? p : "" })}`)),
    );
  }

  return { title: "Workers", node, refresh };
}
