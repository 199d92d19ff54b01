// /ojs/admin/queues: every queue with its depth per state; pause and resume.

import { api, seg } from "../api.js";
import { actionButton, badge, h, num, replace, table } from "../dom.js";
import { ADMIN, PER_PAGE, countCells, navLink, pager, queryString } from "./common.js";

export function queuesView({ query, navigate, notify }) {
  const page = Number(query.get("page")) || 1;
  const body = h("div");
  const node = h("div", {}, h("h1", {}, "Queues"), body);

  async function toggle(q) {
    const action = q.paused ? "resume" : "pause";
    const out = await api(`${ADMIN}/queues/${seg(q.name)}/${action}`, { method: "POST" });
    notify(`Queue ${q.name} ${out?.paused ? "paused" : "resumed"}`, "ok");
    await refresh();
  }

  async function refresh() {
    const list = await api(`${ADMIN}/queues`, { query: { page, per_page: PER_PAGE } });
    replace(
      body,
      table(
        [
          ["Queue", (q) => navLink(`/jobs?queue=${seg(q.name)}`, q.name)],
          ["State", (q) => badge(q.paused ? "paused" : q.state || "active")],
          ...countCells((q) => q.counts),
          ["Processed / min", (q) => num(q.throughput?.processed_per_minute)],
          ["Failed / min", (q) => num(q.throughput?.failed_per_minute)],
          [
            "",
            (q) =>
              actionButton(q.paused ? "Resume" : "Pause", () => toggle(q), {
                cls: q.paused ? "primary" : "",
              }),
          ],
        ],
        list.items,
        { empty: "No queues yet.", rowAttrs: (q) => ({ "data-queue": q.name }) },
      ),
      pager(list.pagination, (p) => navigate(`/queues${queryString({ page: p > 1 ? p : "" })}`)),
    );
  }

  return { title: "Queues", node, refresh };
}
