// Live updates: one EventSource on the server's event stream (same origin, so the session
// cookie goes with it; EventSource cannot send headers). Each event is handed to the
// listeners; the browser reconnects by itself with Last-Event-ID.

import { root } from "./api.js";

/** Subscribe to a channel ("all", "job:<id>", "queue:<name>"); returns a closer. */
export function subscribe(channel, onEvent, onStatus = () => {}) {
  const url = `${root}/ojs/v1/events/stream?channel=${encodeURIComponent(channel)}`;
  let source;
  try {
    source = new EventSource(url);
  } catch {
    onStatus("off");
    return () => {};
  }
  const handle = (message) => {
    let event = null;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    onEvent(event);
  };
  source.onmessage = handle;
  // The server names each frame after its event type (event: job.completed): listen to the
  // types the dashboard shows, as well as unnamed frames.
  for (const type of EVENT_TYPES) source.addEventListener(type, handle);
  source.onopen = () => onStatus("live");
  source.onerror = () => onStatus(source.readyState === EventSource.CLOSED ? "off" : "reconnecting");
  return () => source.close();
}

/** The event types the server emits (docs/events.md). */
export const EVENT_TYPES = [
  "cron.skipped",
  "cron.triggered",
  "job.cancelled",
  "job.checkpointed",
  "job.completed",
  "job.discarded",
  "job.enqueued",
  "job.expired",
  "job.failed",
  "job.progress",
  "job.requeued",
  "job.retrying",
  "job.scheduled",
  "job.started",
  "queue.paused",
  "queue.resumed",
  "workflow.cancelled",
  "workflow.completed",
  "workflow.failed",
  "workflow.started",
];
