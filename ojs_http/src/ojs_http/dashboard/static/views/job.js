// /ojs/admin/jobs/{id}: the envelope, args, result, errors with backtraces, attempts, the
// timeline of the job's events (history from GET /ojs/v1/events?job_id=, then live ones),
// and retry / cancel.

import { ApiError, api, seg } from "../api.js";
import { actionButton, badge, h, jsonBlock, replace, time } from "../dom.js";
import { subscribe } from "../live.js";
import { ADMIN, navLink, section } from "./common.js";

const TERMINAL = new Set(["completed", "cancelled", "discarded"]);
const TERMINAL_EVENTS = new Set(["job.completed", "job.cancelled", "job.discarded"]);
const TIMES = ["created_at", "enqueued_at", "scheduled_at", "started_at", "completed_at", "cancelled_at", "discarded_at"];

export function jobView({ params, notify }) {
  const [id] = params;
  const head = h("div", { class: "card-head" }, h("h1", { class: "mono" }, id));
  const body = h("div");
  const timeline = h("ol", { class: "timeline" });
  const seen = new Set();
  const node = h("div", {}, navLink("/jobs", "‹ Jobs", { class: "back" }), head, body, section("Timeline", null, timeline));

  function addEvent(event) {
    // The history and the live stream both carry an event (a finished job's stream repeats
    // its last one): one entry per type and time.
    const key = `${event.type}|${event.time || event.timestamp}`;
    if (seen.has(key)) return;
    seen.add(key);
    const data = event.data || {};
    const detail = data.error?.message || data.message || (data.attempt ? `attempt ${data.attempt}` : "");
    const item = h("li", { "data-event": event.type }, time(event.time || event.timestamp), " ", badge(event.type), " ", detail ? h("span", {}, detail) : null);
    // Keep the timeline in time order whatever order history and live events arrive in.
    const when = event.time || "";
    const after = [...timeline.children].find((li) => (li.querySelector("time")?.getAttribute("datetime") || "") > when);
    timeline.insertBefore(item, after || null);
  }

  // The job's stream ends with its terminal event (the browser would reconnect and get that
  // event again, forever): close it then, and open it again when the job is retried.
  let close = null;
  function listen() {
    close?.();
    close = subscribe(`job:${id}`, (event) => {
      addEvent(event);
      if (TERMINAL_EVENTS.has(event.type)) {
        close?.();
        close = null;
      }
    });
  }

  async function act(action) {
    await api(`${ADMIN}/jobs/${seg(id)}/${action}`, { method: "POST" });
    if (action === "retry") listen();
    notify(`Job ${action === "retry" ? "retried" : "cancelled"}`, "ok");
    await refresh();
  }

  async function refresh() {
    let job;
    try {
      job = await api(`${ADMIN}/jobs/${seg(id)}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        replace(body, h("p", { class: "empty" }, "No job has this id (it may have been removed by retention)."));
        return;
      }
      throw error;
    }
    const meta = job.metadata || {};
    const errors = job.errors || (job.error ? [job.error] : []);
    replace(
      head,
      h("h1", { class: "mono" }, job.id),
      h(
        "div",
        { class: "actions" },
        badge(job.state),
        job.state === "discarded" ? actionButton("Retry", () => act("retry"), { cls: "primary" }) : null,
        TERMINAL.has(job.state) ? null : actionButton("Cancel", () => act("cancel"), { cls: "danger" }),
      ),
    );
    replace(
      body,
      section(
        "Job",
        null,
        h(
          "dl",
          { class: "facts" },
          fact("Type", job.type),
          fact("Queue", navLink(`/jobs?queue=${seg(job.queue)}`, job.queue)),
          fact("State", badge(job.state)),
          fact("Attempt", `${job.attempt ?? 0} of ${job.max_attempts ?? "?"}`),
          fact("Priority", job.priority ?? 0),
          job.workflow_id ? fact("Workflow", navLink(`/workflows/${seg(job.workflow_id)}`, job.workflow_id)) : null,
          TIMES.map((k) => (meta[k] || job[k] ? fact(k.replace("_at", "").replace("_", " "), time(meta[k] || job[k])) : null)),
        ),
      ),
      section("Arguments", null, jsonBlock(job.args)),
      job.result !== undefined && job.result !== null ? section("Result", null, jsonBlock(job.result)) : null,
      section(
        `Errors (${errors.length})`,
        null,
        errors.length === 0
          ? h("p", { class: "empty" }, "No errors.")
          : h("ol", { class: "errors" }, errors.map((e) => errorItem(e))),
      ),
      job.meta && Object.keys(job.meta).length ? section("Meta", null, jsonBlock(job.meta)) : null,
      h("details", { class: "card" }, h("summary", {}, "Envelope (JSON)"), jsonBlock(job)),
    );
  }

  async function history() {
    const out = await api("/ojs/v1/events", { query: { job_id: id, limit: 200 } });
    for (const event of out?.events || []) addEvent(event);
  }

  // History first, then the job's own live channel (the app's "all" stream refreshes the rest).
  history().catch(() => {});
  listen();
  return { title: `Job ${id}`, node, refresh, dispose: () => close?.() };
}

function fact(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

function errorItem(error) {
  const trace = error.backtrace || error.stacktrace || error.details?.backtrace;
  return h(
    "li",
    { class: "error-item" },
    h(
      "div",
      {},
      h("strong", {}, error.type || error.code || "error"),
      error.attempt !== undefined ? ` · attempt ${error.attempt}` : "",
      error.occurred_at ? [" · ", time(error.occurred_at)] : null,
    ),
    h("p", {}, error.message || ""),
    trace ? h("pre", { class: "backtrace" }, Array.isArray(trace) ? trace.join("\n") : String(trace)) : null,
  );
}
