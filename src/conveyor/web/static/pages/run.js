// One run: its header (commit, trigger, status, times, release), the job graph, and the
// selected job's steps with their logs streamed live over SSE. Run and job states follow the
// live stream (`dispatch`, `logs`); log lines come from /runs/{id}/logs/stream.
//
// Which job is shown: the URL's ?job= or #L<job>-<n>, else the first failed job (its failed
// step opened), else the running one; until someone picks a job, the choice follows the run.
//
// The parts live in pages/run/: the header (run/header.js), the selected job (run/joblog.js)
// with its log stream (run/logstream.js) and search (run/logsearch.js); this module wires
// them to the run, which it reads again whenever the live stream says it changed.

import {h, replace, errorBox} from '../lib/dom.js';
import {duration, between} from '../lib/format.js';
import {createDag} from '../lib/dag.js';
import {TERMINAL, parseAnchor, preferredJob} from './run/common.js';
import {createHeader} from './run/header.js';
import {createJobView} from './run/joblog.js';

// The shell loads pages/run.css with this page.
export const styled = true;

// Job and step starts are not announced on the live stream; while a run is active the page
// also reads it this often so a job that starts quietly still shows as running.
const ACTIVE_POLL_MS = 2000;

export async function render(root, params, ctx) {
  // Kept as the string it is: a Number would round an id beyond 2^53 into another one.
  const id = params.id;
  if (!/^[1-9]\d{0,18}$/.test(id)) {
    replace(root, h('h1', null, 'Run'), errorBox({message: `"${params.id}" is not a run number`}));
    return undefined;
  }
  replace(root, h('p', {class: 'loading'}, 'Loading run…'));
  let run;
  try {
    run = await ctx.api(`/runs/${id}`);
  } catch (err) {
    replace(root, h('h1', null, `Run #${id}`), errorBox(err, 'This run could not be loaded'));
    return undefined;
  }

  const anchor = parseAnchor(location.hash);
  const jobNames = () => new Set(page.run.jobs.map((j) => j.name));
  // What the parts share. `auto`: until someone picks a job (here, or through the URL), the
  // page picks for them; `pendingAnchor`: the line the URL points to, until it is shown.
  const page = {
    id,
    ctx,
    run,
    auto: false,
    pendingAnchor: null,
    disposed: false,
    jobOf: (name) => page.run.jobs.find((j) => j.name === name) || null,
    refresh: () => refresh(),
    showing: (name) => Boolean(view && view.job === name),
  };
  let selected = params.query.get('job');
  if (anchor && jobNames().has(anchor.job)) selected = anchor.job;
  if (!selected || !jobNames().has(selected)) selected = null;
  page.auto = selected === null;
  if (page.auto) selected = preferredJob(run);
  page.pendingAnchor = anchor && anchor.job === selected ? anchor : null;

  // --- skeleton ----------------------------------------------------------------------------

  const header = createHeader(page);
  const refreshError = h('div', {class: 'run-refresh-error', role: 'alert', hidden: true});
  const graphBox = h('div', {class: 'dag-wrap'});
  const jobPanel = h('section', {class: 'job-panel card', 'aria-labelledby': 'job-heading'});
  replace(root,
    h('section', {class: 'run-page'},
      h('header', {class: 'run-head card'},
        h('div', {class: 'run-head-top'}, header.heading, header.actions),
        header.commitLine, header.reasonLine, header.facts, refreshError),
      h('section', {class: 'run-graph card', 'aria-labelledby': 'graph-heading'},
        h('h2', {id: 'graph-heading'}, 'Jobs'),
        h('p', {class: 'hint'}, 'Each job runs after the jobs it needs. Choose one to see its steps and log.'),
        graphBox),
      jobPanel));

  const dag = createDag(graphBox, {
    hrefFor: (name) => `/runs/${id}?job=${encodeURIComponent(name)}`,
    onSelect: (name) => {
      page.auto = false;
      history.replaceState(history.state, '', `/runs/${id}?job=${encodeURIComponent(name)}`);
      selectJob(name);
      const heading = document.getElementById('job-heading');
      if (heading) heading.scrollIntoView({block: 'nearest'});
    },
  });

  // --- the selected job --------------------------------------------------------------------

  // Everything about the shown job; replaced when another job is chosen.
  let view = null;

  function selectJob(name) {
    if (view && view.job === name) {
      updateJob();
      dag.update(page.run.jobs, selected);
      return;
    }
    selected = name;
    if (view) view.close();
    view = createJobView(page, jobPanel, name);
    dag.update(page.run.jobs, selected);
  }

  function updateJob() {
    if (view) view.update(page.jobOf(view.job));
  }

  // --- refresh -----------------------------------------------------------------------------

  let loading = false;
  let again = false;
  async function refresh() {
    if (page.disposed) return;
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    try {
      const data = await ctx.api(`/runs/${id}`);
      if (page.disposed) return;
      page.run = data;
      refreshError.hidden = true;
      apply();
    } catch (err) {
      if (page.disposed) return;
      refreshError.hidden = false;
      replace(refreshError, `Could not refresh this run: ${err.message}`);
    } finally {
      loading = false;
      if (again && !page.disposed) {
        again = false;
        refresh();
      }
    }
  }

  function apply() {
    header.render();
    const names = jobNames();
    if (page.auto || !names.has(selected)) {
      const preferred = preferredJob(page.run, selected);
      if (preferred && preferred !== selected) {
        selectJob(preferred);
        return;
      }
    }
    dag.update(page.run.jobs, selected);
    updateJob();
  }

  /** Durations of whatever is still running, every second. */
  function tick() {
    for (const el of root.querySelectorAll('.duration[data-since]')) {
      el.textContent = duration(between(el.dataset.since));
    }
    if (!TERMINAL.has(page.run.status)) dag.update(page.run.jobs, selected);
  }

  header.render();
  if (selected) {
    selectJob(selected);
  } else {
    dag.update(page.run.jobs, selected);
    replace(jobPanel, h('h2', {id: 'job-heading'}, 'No jobs'),
      h('p', {class: 'empty'}, page.run.reason || 'This run has no jobs.'));
  }

  const unsubscribe = ctx.live(['dispatch', 'logs'], refresh);
  const ticker = setInterval(tick, 1000);
  const poller = setInterval(() => {
    if (!TERMINAL.has(page.run.status)) refresh();
  }, ACTIVE_POLL_MS);

  return () => {
    page.disposed = true;
    unsubscribe();
    clearInterval(ticker);
    clearInterval(poller);
    if (view) view.close();
  };
}
