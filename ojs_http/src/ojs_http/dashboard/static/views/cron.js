// /ojs/admin/cron: the registered cron entries, their next and last runs; enable / disable.

import { api, seg } from "../api.js";
import { actionButton, ago, badge, h, replace, table, time } from "../dom.js";
import { ADMIN } from "./common.js";

export function cronView({ notify }) {
  const body = h("div");
  const node = h("div", {}, h("h1", {}, "Cron"), body);

  async function toggle(c) {
    await api(`${ADMIN}/cron/${seg(c.name)}`, { method: "PATCH", body: { enabled: !c.enabled } });
    notify(`Cron ${c.name} ${c.enabled ? "disabled" : "enabled"}`, "ok");
    await refresh();
  }

  async function refresh() {
    const list = await api("/ojs/v1/cron", { query: { limit: 1000 } });
    replace(
      body,
      table(
        [
          ["Name", (c) => c.name],
          ["Expression", (c) => h("code", {}, c.expression || c.cron || "")],
          ["Timezone", (c) => c.timezone || "UTC"],
          ["Job type", (c) => c.job_template?.type || c.type || "—"],
          ["Queue", (c) => c.job_template?.options?.queue || "default"],
          ["State", (c) => badge(c.enabled ? "enabled" : "disabled")],
          ["Next run", (c) => (c.enabled ? [time(c.next_run_at), " (", ago(c.next_run_at), ")"] : "—")],
          ["Last run", (c) => time(c.last_run_at)],
          ["", (c) => actionButton(c.enabled ? "Disable" : "Enable", () => toggle(c), { cls: c.enabled ? "" : "primary" })],
        ],
        list.crons || list.cron_jobs || [],
        { empty: "No cron entry is registered.", rowAttrs: (c) => ({ "data-cron": c.name }) },
      ),
    );
  }

  return { title: "Cron", node, refresh };
}
