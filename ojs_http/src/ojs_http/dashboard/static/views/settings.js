// /ojs/admin/settings: what the server is (its manifest and health) and this browser's
// dashboard preferences.

import { api } from "../api.js";
import { badge, h, jsonBlock, replace, table } from "../dom.js";
import { section } from "./common.js";

export function settingsView() {
  const body = h("div");
  const node = h("div", {}, h("h1", {}, "Settings"), body);

  async function refresh() {
    const [manifest, health] = await Promise.all([api("/ojs/manifest"), api("/ojs/v1/health")]);
    const impl = manifest.implementation || {};
    const caps = Object.entries(manifest.capabilities || {});
    const ext = manifest.extensions || {};
    replace(
      body,
      section(
        "Server",
        badge(health.status),
        h(
          "dl",
          { class: "facts" },
          fact("Implementation", `${impl.name || "?"} ${impl.version || ""}`),
          fact("Language", impl.language || "—"),
          fact("OJS version", manifest.ojs_version || manifest.specversion || "—"),
          fact("Conformance", `level ${manifest.conformance_level ?? "?"} (${manifest.conformance_tier || "—"})`),
          fact("Backend", `${health.backend?.type || manifest.backend || "?"} · ${health.backend?.status || "?"} · ${health.backend?.latency_ms ?? "?"} ms`),
          fact("Protocols", (manifest.protocols || []).join(", ")),
          fact("API base", manifest.endpoints?.base_url || "—"),
        ),
      ),
      section(
        "Capabilities",
        null,
        table(
          [
            ["Capability", ([name]) => name],
            ["Supported", ([, on]) => badge(on ? "yes" : "no")],
          ],
          caps,
        ),
      ),
      section(
        "Extensions",
        null,
        table(
          [
            ["Name", (e) => e.name],
            ["Kind", (e) => e.kind],
            ["Version", (e) => e.version || "—"],
            ["URI", (e) => h("code", {}, e.uri || "")],
          ],
          [...(ext.official || []).map((e) => ({ ...e, kind: "official" })), ...(ext.experimental || []).map((e) => ({ ...e, kind: "experimental" }))],
        ),
      ),
      h("details", { class: "card" }, h("summary", {}, "Manifest (JSON)"), jsonBlock(manifest)),
    );
  }

  return { title: "Settings", node, refresh };
}

function fact(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}
