// /ojs/admin/dead-letter: jobs whose retries ran out; retry, delete, bulk retry and purge
// (each destructive action asks for a confirmation first).

import { api, seg } from "../api.js";
import { actionButton, confirmButton, h, num, replace, table, time } from "../dom.js";
import { ADMIN, PER_PAGE, jobLink, pager, queryString, section } from "./common.js";

export function deadLetterView({ query, navigate, notify }) {
  const filters = { queue: query.get("queue") || "", type: query.get("type") || "" };
  const page = Number(query.get("page")) || 1;
  const go = (values, p) => navigate(`/dead-letter${queryString({ ...values, page: p > 1 ? p : "" })}`);
  const stats = h("div", { class: "stats" });
  const bulk = h("div", { class: "actions" });
  const body = h("div");
  const form = h(
    "form",
    {
      class: "filters",
      onsubmit: (event) => {
        event.preventDefault();
        const data = new FormData(event.target);
        go({ queue: data.get("queue").trim(), type: data.get("type").trim() }, 1);
      },
    },
    h("label", {}, "Queue ", h("input", { name: "queue", value: filters.queue, placeholder: "any" })),
    h("label", {}, "Type ", h("input", { name: "type", value: filters.type, placeholder: "any" })),
    h("button", { type: "submit", class: "primary" }, "Filter"),
  );
  const node = h("div", {}, h("h1", {}, "Dead letter"), stats, h("div", { class: "toolbar" }, form, bulk), body);

  async function retry(id) {
    await api(`${ADMIN}/dead-letter/${seg(id)}/retry`, { method: "POST" });
    notify(`Job ${id} retried`, "ok");
    await refresh();
  }

  async function remove(id) {
    await api(`${ADMIN}/dead-letter/${seg(id)}`, { method: "DELETE" });
    notify(`Job ${id} deleted`, "ok");
    await refresh();
  }

  async function retryAll() {
    const filter = Object.fromEntries(Object.entries(filters).filter(([, v]) => v));
    const out = await api(`${ADMIN}/dead-letter/retry`, { method: "POST", body: { filter, confirm: true } });
    notify(`Retried ${out?.succeeded ?? 0} of ${out?.matched ?? 0}`, out?.failed ? "error" : "ok");
    await refresh();
  }

  async function purge() {
    const out = await api(`${ADMIN}/dead-letter`, { method: "DELETE", body: { confirm: true } });
    notify(`Purged ${out?.purged_count ?? 0} dead-letter jobs`, "ok");
    await refresh();
  }

  async function refresh() {
    const [list, st] = await Promise.all([
      api(`${ADMIN}/dead-letter`, { query: { ...filters, page, per_page: PER_PAGE } }),
      api(`${ADMIN}/dead-letter/stats`),
    ]);
    replace(
      stats,
      h("div", { class: "stat" }, h("div", { class: "stat-value" }, num(st.total)), h("div", { class: "stat-label" }, "dead jobs")),
      h("div", { class: "stat" }, h("div", { class: "stat-value" }, time(st.oldest_at)), h("div", { class: "stat-label" }, "oldest")),
      h("div", { class: "stat" }, h("div", { class: "stat-value" }, time(st.newest_at)), h("div", { class: "stat-label" }, "newest")),
      breakdown("By queue", st.by_queue),
      breakdown("By error type", st.by_error_type),
    );
    const total = list.pagination?.total ?? 0;
    replace(
      bulk,
      total
        ? confirmButton("Retry all", `Retry ${filters.queue || filters.type ? "the matching" : "all"} ${total} dead jobs?`, retryAll, { danger: false })
        : null,
      st.total ? confirmButton("Purge", `Delete all ${st.total} dead-letter jobs for good?`, purge) : null,
    );
    replace(
      body,
      table(
        [
          ["Id", (j) => jobLink(j.id)],
          ["Type", (j) => j.type],
          ["Queue", (j) => j.queue],
          ["Attempts", (j) => j.attempt ?? 0],
          ["Last error", (j) => lastError(j)],
          ["Created", (j) => time(j.created_at)],
          [
            "",
            (j) =>
              h(
                "div",
                { class: "actions" },
                actionButton("Retry", () => retry(j.id), { cls: "primary" }),
                confirmButton("Delete", "Delete this job?", () => remove(j.id)),
              ),
          ],
        ],
        list.items,
        { empty: "The dead-letter queue is empty.", rowAttrs: (j) => ({ "data-job": j.id }) },
      ),
      pager(list.pagination, (p) => go(filters, p)),
    );
  }

  return { title: "Dead letter", node, refresh };
}

function lastError(job) {
  const errors = job.errors || (job.error ? [job.error] : []);
  const last = errors[errors.length - 1];
  if (!last) return h("span", { class: "muted" }, "—");
  return h("span", { title: last.message || "" }, `${last.type || last.code || "error"}: ${(last.message || "").slice(0, 120)}`);
}

function breakdown(label, counts) {
  const entries = Array.isArray(counts)
    ? counts.map((c) => [c.name ?? c.queue ?? c.type ?? "?", c.count ?? 0])
    : Object.entries(counts || {});
  if (entries.length === 0) return null;
  return h(
    "div",
    { class: "stat breakdown" },
    h("div", { class: "stat-label" }, label),
    h("ul", {}, entries.slice(0, 6).map(([name, n]) => h("li", {}, h("span", {}, name), " ", h("strong", {}, num(n))))),
  );
}
