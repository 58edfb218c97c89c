// A job's log lines over SSE (/runs/{id}/logs/stream), handed on in batches of one animation
// frame; after a dropped connection it resumes after the last line it has.

const RETRY_MS = 2000;

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

  connect(0);
  return {
    close() {
      if (source) source.close();
      source = null;
      clearTimeout(retry);
      if (frame !== null) cancelAnimationFrame(frame);
    },
  };
}
