// /ojs/admin/workflows (the list, a lookup by id) and /ojs/admin/workflows/{id} (its steps
// and their states).

import { ApiError, api, seg } from "../api.js";
import { badge, h, num, replace, table, time } from "../dom.js";
import { ADMIN, PER_PAGE, jobLink, navLink, pager, queryString, section } from "./common.js";

export function workflowsView({ query, navigate }) {
  const page = Number(query.get("page")) || 1;
  const lookup = h(
    "form",
    {
      class: "filters lookup",
      onsubmit: (event) => {
        event.preventDefault();
        const id = new FormData(event.target).get("id").trim();
        if (id) navigate(`/workflows/${seg(id)}`);
      },
    },
    h("label", {}, "Workflow id ", h("input", { name: "id", class: "mono", size: 38 })),
    h("button", { type: "submit" }, "Open"),
  );
  const body = h("div");
  const node = h("div", {}, h("h1", {}, "Workflows"), h("div", { class: "toolbar" }, lookup), body);

  async function refresh() {
    const list = await api(`${ADMIN}/workflows`, { query: { page, per_page: PER_PAGE } });
    replace(
      body,
      table(
        [
          ["Id", (w) => navLink(`/workflows/${seg(w.id)}`, w.id, { class: "mono" })],
          ["Name", (w) => w.name || "—"],
          ["Type", (w) => w.type],
          ["State", (w) => badge(w.state)],
          ["Steps", (w) => progress(w.steps_completed, w.steps_total)],
          ["Created", (w) => time(w.created_at)],
        ],
        list.items,
        { empty: "No workflows.", rowAttrs: (w) => ({ "data-workflow": w.id }) },
      ),
      pager(list.pagination, (p) => navigate(`/workflows${queryString({ page: p > 1 ? p : "" })}`)),
    );
  }

  return { title: "Workflows", node, refresh };
}

export function workflowView({ params }) {
  const [id] = params;
  const body = h("div");
  const node = h("div", {}, navLink("/workflows", "‹ Workflows", { class: "back" }), h("h1", { class: "mono" }, id), body);

  async function refresh() {
    let out;
    try {
      out = await api(`/ojs/v1/workflows/${seg(id)}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        replace(body, h("p", { class: "empty" }, "No workflow has this id."));
        return;
      }
      throw error;
    }
    const w = out.workflow || out;
    replace(
      body,
      section(
        w.name || "Workflow",
        badge(w.state),
        h(
          "dl",
          { class: "facts" },
          h("dt", {}, "Type"),
          h("dd", {}, w.type),
          h("dt", {}, "Steps"),
          h("dd", {}, progress(w.steps_completed, w.steps_total)),
          h("dt", {}, "Created"),
          h("dd", {}, time(w.created_at)),
          w.completed_at ? [h("dt", {}, "Finished"), h("dd", {}, time(w.completed_at))] : null,
        ),
      ),
      section(
        "Steps",
        null,
        table(
          [
            ["#", (s) => s.index],
            ["Step", (s) => s.id],
            ["Type", (s) => s.type || "—"],
            ["State", (s) => badge(s.state)],
            ["Job", (s) => (s.job_id ? jobLink(s.job_id) : "—")],
            ["Depends on", (s) => (s.depends_on || []).join(", ") || "—"],
            ["Started", (s) => time(s.started_at)],
            ["Finished", (s) => time(s.completed_at)],
          ],
          w.steps || w.jobs || [],
          { rowAttrs: (s) => ({ "data-step": s.id }) },
        ),
      ),
    );
  }

  return { title: `Workflow ${id}`, node, refresh };
}

function progress(done, total) {
  const pct = total ? Math.round((100 * (done || 0)) / total) : 0;
  return h(
    "span",
    { class: "progress" },
    h("progress", { max: total || 1, value: done || 0 }),
    ` ${num(done ?? 0)} / ${num(total ?? 0)} (${pct}%)`,
  );
}
