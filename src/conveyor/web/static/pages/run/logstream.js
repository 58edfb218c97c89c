// A job's log lines: what is written already read by pages (GET /runs/{id}/logs, one request
// and one JSON document per PAGE lines), then the rest over SSE (/runs/{id}/logs/stream) as it
// is written, handed on in batches of one animation frame; after a dropped connection it
// resumes after the last line it has.

import {api} from '../../lib/api.js';

const RETRY_MS = 2000;
const PAGE = 10000;

/**
 * Streams the log of job `name` of run `runId`. `state` is the element that says how the
 * stream is; `live()` whether the run still runs; `onBatch(lines)` takes new lines, `onEnd()`
 * is called once the whole log is in; `wanted()` says whether the stream is still wanted (for
 * a reconnect). Returns {close()}.
 */
export function streamLog(runId, name, {state, live, onBatch, onEnd, wanted}) {
  let source = null;
  let retry = null;
  let lastId = 0;
  let ended = false;
  let queue = [];
  let frame = null;

  function connect(after) {
    const url = `/api/v1/runs/${runId}/logs/stream?job=${encodeURIComponent(name)}&after=${after}`;
    source = new EventSource(url);
    state.textContent = live() ? '● Streaming live' : 'Loading log…';
    state.dataset.state = 'streaming';
    source.addEventListener('line', (event) => {
      let line;
      try {
        line = JSON.parse(event.data);
      } catch {
        return;
      }
      if (line.id <= lastId) return; // a reconnect may repeat what we have
      lastId = line.id;
      queue.push(line);
      if (frame === null) frame = requestAnimationFrame(flush);
    });
    source.addEventListener('end', () => {
      ended = true;
      source.close();
      source = null;
      if (frame !== null) {
        cancelAnimationFrame(frame);
        frame = null;
      }
      flush();
      onEnd();
    });
    source.addEventListener('error', () => {
      if (ended || !wanted()) return;
      // EventSource would reconnect from the start; we resume after the last line instead.
      source.close();
      source = null;
      state.textContent = '○ Reconnecting…';
      state.dataset.state = 'reconnecting';
      clearTimeout(retry);
      retry = setTimeout(() => {
        if (wanted()) connect(lastId);
      }, RETRY_MS);
    });
  }

  function flush() {
    frame = null;
    const batch = queue;
    queue = [];
    if (batch.length) onBatch(batch);
  }

  let closed = false;

  /** Pages of what is written already; then the stream, for what comes (or the end). */
  async function catchUp() {
    const job = encodeURIComponent(name);
    state.textContent = 'Loading log…';
    state.dataset.state = 'streaming';
    try {
      while (!closed) {
        const page = await api(`/runs/${runId}/logs?job=${job}&after=${lastId}&limit=${PAGE}`);
        if (closed) return;
        const fresh = page.lines.filter((line) => line.id > lastId);
        if (fresh.length) {
          lastId = fresh[fresh.length - 1].id;
          onBatch(fresh);
        }
        if (page.ended) {
          ended = true;
          onEnd();
          return;
        }
        if (page.lines.length < PAGE) break;
      }
    } catch {
      // The stream below reads from the last line we have, and says so if it cannot.
    }
    if (!closed) connect(lastId);
  }

  catchUp();
  return {
    close() {
      closed = true;
      if (source) source.close();
      source = null;
      clearTimeout(retry);
      if (frame !== null) cancelAnimationFrame(frame);
    },
  };
}
