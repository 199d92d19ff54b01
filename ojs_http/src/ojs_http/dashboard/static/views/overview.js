// /ojs/admin: totals per state, throughput, workers, and every queue's depth per state.

import { api, seg } from "../api.js";
import { badge, h, num, replace, table } from "../dom.js";
import { ADMIN, JOB_STATES, countCells, navLink, section } from "./common.js";

export function overviewView() {
  const totals = h("div", { class: "stats" });
  const queues = h("div");
  const node = h(
    "div",
    {},
    h("h1", {}, "Overview"),
    totals,
    section("Queues", navLink("/queues", "Manage queues"), queues),
  );

  async function refresh() {
    const [stats, list] = await Promise.all([api(`${ADMIN}/stats`), api(`${ADMIN}/queues`, { query: { per_page: 100 } })]);
    const jobs = stats.jobs || {};
    const tp = stats.throughput || {};
    replace(
      totals,
      stat("Queues", num(stats.queues)),
      stat("Workers", num(stats.workers)),
      stat("Processed / min", num(tp.processed_per_minute)),
      stat("Failed / min", num(tp.failed_per_minute)),
      stat("Uptime", uptime(stats.uptime_seconds)),
      JOB_STATES.map((s) => stat(s, navLink(`/jobs?state=${s}`, num(jobs[s] ?? 0)), `state-${s}`)),
    );
    replace(
      queues,
      table(
        [
          ["Queue", (q) => navLink(`/jobs?queue=${seg(q.name)}`, q.name)],
          ["State", (q) => badge(q.paused ? "paused" : q.state || "active")],
          ...countCells((q) => q.counts),
          ["Processed / min", (q) => num(q.throughput?.processed_per_minute)],
          ["Failed / min", (q) => num(q.throughput?.failed_per_minute)],
        ],
        list.items,
        { empty: "No queues yet: enqueue a job to create one.", rowAttrs: (q) => ({ "data-queue": q.name }) },
      ),
    );
  }

  return { title: "Overview", node, refresh };
}

function stat(label, value, cls = "") {
  return h("div", { class: `stat ${cls}` }, h("div", { class: "stat-value" }, value), h("div", { class: "stat-label" }, label));
}

function uptime(seconds) {
  if (typeof seconds !== "number") return "—";
  const d = Math.floor(seconds / 86400);
  const hr = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  return d ? `${d} d ${hr} h` : hr ? `${hr} h ${m} min` : `${m} min`;
}
