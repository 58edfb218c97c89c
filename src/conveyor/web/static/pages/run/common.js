// What the run page's modules share: job and step states, line anchors, live durations and
// which job to show.

import {h} from '../../lib/dom.js';
import {duration, between} from '../../lib/format.js';

export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled', 'interrupted', 'skipped']);
export const BAD = new Set(['failed', 'interrupted']);
// A job's own lines (before and between its steps) are shown in a section of this key.
export const SETUP = 'setup';
export const REUSED = /^reused from run (\d+)$/;
const LINE_ANCHOR = /^#L(.+)-(\d+)$/;

export function lineId(job, seq) {
  return `L${job}-${seq}`;
}

export function parseAnchor(hash) {
  const m = LINE_ANCHOR.exec(hash || '');
  if (!m) return null;
  try {
    return {job: decodeURIComponent(m[1]), seq: Number(m[2])};
  } catch {
    return null;
  }
}

// A job given to a runner again (its runner was lost) logs each attempt apart: a labelled
// rule where each attempt's lines begin in a step's log (the `attempt` of each line).
export function attemptRule(section, line, attempts) {
  const attempt = line.attempt || 0;
  if (!attempt || attempt === section.attempt) return null;
  section.attempt = attempt;
  if (attempts <= 1) return null;
  const label = attempt < attempts
    ? `Attempt ${attempt} of ${attempts} · ended when its runner stopped answering`
    : `Attempt ${attempt} of ${attempts}`;
  return h('div', {class: 'log-attempt', role: 'separator', dataset: {attempt: String(attempt)}},
    label);
}

export function branch(ref) {
  if (!ref) return null;
  return ref.replace(/^refs\/(heads|tags)\//, '');
}

/** A live duration: ticks (see the page's tick()) while `start` is set and `end` is not. */
export function durationEl(seconds, start, end) {
  const el = h('span', {class: 'duration'});
  if (seconds === null || seconds === undefined) {
    if (start && !end) {
      el.dataset.since = start;
      el.textContent = duration(between(start));
    } else {
      el.textContent = '—';
    }
  } else {
    el.textContent = duration(seconds);
  }
  return el;
}

/**
 * The job to show when nobody has chosen: a failed one, else a running or queued one, else the
 * one already shown (a run that just went green stays where the reader was), else the first.
 */
export function preferredJob(run, current = null) {
  const jobs = run.jobs || [];
  const pick = (states) => jobs.find((j) => states.includes(j.status));
  const job = pick(['failed']) || pick(['interrupted']) || pick(['running']) || pick(['queued']) ||
    jobs.find((j) => j.name === current) || pick(['cancelled']) || jobs[0];
  return job ? job.name : null;
}
