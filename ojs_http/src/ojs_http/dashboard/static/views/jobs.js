// /ojs/admin/jobs?state=&queue=&type=&page=: the job browser, and a lookup by id.

import { api, seg } from "../api.js";
import { badge, h, replace, table, time } from "../dom.js";
import { ADMIN, JOB_STATES, PER_PAGE, jobLink, navLink, pager, queryString, select } from "./common.js";

export function jobsView({ query, navigate }) {
  const filters = {
    state: query.get("state") || "",
    queue: query.get("queue") || "",
    type: query.get("type") || "",
  };
  const page = Number(query.get("page")) || 1;
  const go = (values, p) => navigate(`/jobs${queryString({ ...values, page: p > 1 ? p : "" })}`);

  const form = h(
    "form",
    {
      class: "filters",
      role: "search",
      onsubmit: (event) => {
        event.preventDefault();
        const data = new FormData(event.target);
        go({ state: data.get("state"), queue: data.get("queue").trim(), type: data.get("type").trim() }, 1);
      },
    },
    h("label", {}, "State ", select("state", [["", "any"], ...JOB_STATES.map((s) => [s, s])], filters.state, "State")),
    h("label", {}, "Queue ", h("input", { name: "queue", value: filters.queue, placeholder: "any" })),
    h("label", {}, "Type ", h("input", { name: "type", value: filters.type, placeholder: "any" })),
    h("button", { type: "submit", class: "primary" }, "Filter"),
    h("button", { type: "button", onclick: () => go({}, 1) }, "Clear"),
  );
  const lookup = h(
    "form",
    {
      class: "filters lookup",
      onsubmit: (event) => {
        event.preventDefault();
        const id = new FormData(event.target).get("id").trim();
        if (id) navigate(`/jobs/${seg(id)}`);
      },
    },
    h("label", {}, "Job id ", h("input", { name: "id", placeholder: "019…", class: "mono", size: 38 })),
    h("button", { type: "submit" }, "Open"),
  );
  const body = h("div");
  const node = h("div", {}, h("h1", {}, "Jobs"), h("div", { class: "toolbar" }, form, lookup), body);

  async function refresh() {
    const list = await api(`${ADMIN}/jobs`, { query: { ...filters, page, per_page: PER_PAGE } });
    replace(
      body,
      table(
        [
          ["Id", (j) => jobLink(j.id)],
          ["Type", (j) => j.type],
          ["Queue", (j) => navLink(`/jobs?queue=${seg(j.queue)}`, j.queue)],
          ["State", (j) => badge(j.state)],
          ["Priority", (j) => j.priority ?? 0],
          ["Attempt", (j) => j.attempt ?? 0],
          ["Created", (j) => time(j.created_at)],
          ["Scheduled", (j) => time(j.scheduled_at)],
          ["Completed", (j) => time(j.completed_at)],
        ],
        list.items,
        { empty: "No job matches these filters.", rowAttrs: (j) => ({ "data-job": j.id }) },
      ),
      pager(list.pagination, (p) => go(filters, p)),
    );
  }

  return { title: "Jobs", node, refresh };
}
