// One run: its header (commit, trigger, status, times, release), the job graph, and the
// selected job's steps with their logs streamed live over SSE. Run and job states follow the
// live stream (`dispatch`, `logs`); log lines come from /runs/{id}/logs/stream.
//
// Which job is shown: the URL's ?job= or #L<job>-<n>, else the first failed job (its failed
// step opened), else the running one; until someone picks a job, the choice follows the run.

import {h, replace, badge, errorBox} from '../lib/dom.js';
import {timeEl, absTime, duration, between, shortSha, firstLine} from '../lib/format.js';
import {ansiToFragment, stripAnsi} from '../lib/ansi.js';
import {createDag} from '../lib/dag.js';

// The shell loads pages/run.css with this page.
export const styled = true;

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled', 'interrupted', 'skipped']);
const BAD = new Set(['failed', 'interrupted']);
// Job and step starts are not announced on the live stream; while a run is active the page
// also reads it this often so a job that starts quietly still shows as running.
const ACTIVE_POLL_MS = 2000;
const STREAM_RETRY_MS = 2000;
const LINE_ANCHOR = /^#L(.+)-(\d+)$/;
const SETUP = 'setup';
const REUSED = /^reused from run (\d+)$/;

function lineId(job, seq) {
  return `L${job}-${seq}`;
}

function parseAnchor(hash) {
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
function attemptRule(section, line, attempts) {
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

function branch(ref) {
  if (!ref) return null;
  return ref.replace(/^refs\/(heads|tags)\//, '');
}

/** A live duration: ticks (see tick()) while `start` is set and `end` is not. */
function durationEl(seconds, start, end) {
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
function preferredJob(run, current = null) {
  const jobs = run.jobs || [];
  const pick = (states) => jobs.find((j) => states.includes(j.status));
  const job = pick(['failed']) || pick(['interrupted']) || pick(['running']) || pick(['queued']) ||
    jobs.find((j) => j.name === current) || pick(['cancelled']) || jobs[0];
  return job ? job.name : null;
}

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

  const canTrigger = Boolean(ctx.me && ctx.me.can && ctx.me.can.trigger);
  const anchor = parseAnchor(location.hash);
  const jobNames = () => new Set(run.jobs.map((j) => j.name));
  let selected = params.query.get('job');
  if (anchor && jobNames().has(anchor.job)) selected = anchor.job;
  if (!selected || !jobNames().has(selected)) selected = null;
  // Until someone picks a job (here, or through the URL), the page picks for them.
  let auto = selected === null;
  if (auto) selected = preferredJob(run);
  let pendingAnchor = anchor && anchor.job === selected ? anchor : null;
  let disposed = false;
  let busy = false;

  // --- skeleton ----------------------------------------------------------------------------

  const heading = h('h1', {class: 'run-title'});
  const facts = h('dl', {class: 'run-facts'});
  const commitLine = h('p', {class: 'run-commit'});
  const reasonLine = h('p', {class: 'run-reason', hidden: true});
  const actions = h('div', {class: 'run-actions', role: 'group', 'aria-label': 'Run actions'});
  const refreshError = h('div', {class: 'run-refresh-error', role: 'alert', hidden: true});
  const graphBox = h('div', {class: 'dag-wrap'});
  const jobPanel = h('section', {class: 'job-panel card', 'aria-labelledby': 'job-heading'});
  replace(root,
    h('section', {class: 'run-page'},
      h('header', {class: 'run-head card'},
        h('div', {class: 'run-head-top'}, heading, actions),
        commitLine, reasonLine, facts, refreshError),
      h('section', {class: 'run-graph card', 'aria-labelledby': 'graph-heading'},
        h('h2', {id: 'graph-heading'}, 'Jobs'),
        h('p', {class: 'hint'}, 'Each job runs after the jobs it needs. Choose one to see its steps and log.'),
        graphBox),
      jobPanel));

  const dag = createDag(graphBox, {
    hrefFor: (name) => `/runs/${id}?job=${encodeURIComponent(name)}`,
    onSelect: (name) => {
      auto = false;
      history.replaceState(history.state, '', `/runs/${id}?job=${encodeURIComponent(name)}`);
      selectJob(name);
      const heading = document.getElementById('job-heading');
      if (heading) heading.scrollIntoView({block: 'nearest'});
    },
  });

  // --- header ------------------------------------------------------------------------------

  function renderHeader() {
    document.title = `Run #${run.id} · ${run.service} · Conveyor`;
    replace(heading,
      h('span', {class: 'run-service'}, run.service), ' ',
      h('span', {class: 'run-number'}, `run #${run.id}`), ' ',
      h('span', {class: 'run-status', 'data-testid': 'run-status'}, badge(run.status)));
    const commit = run.commit || {};
    const subject = firstLine(run.subject || commit.subject || commit.message || '');
    replace(commitLine,
      h('code', {class: 'sha', title: run.sha}, shortSha(run.sha)), ' ',
      h('span', {class: 'run-subject'}, subject || '(no message)'),
      run.author || commit.author_name
        ? h('span', {class: 'run-author'}, ' — ', run.author || commit.author_name) : null);
    reasonLine.hidden = !run.reason;
    reasonLine.classList.toggle('run-reason-bad', BAD.has(run.status));
    reasonLine.textContent = run.reason || '';
    const fact = (term, ...value) => h('div', {class: 'fact'}, h('dt', null, term), h('dd', null, ...value));
    replace(facts,
      fact('Trigger', run.trigger),
      run.ref ? fact('Ref', h('code', {title: run.ref}, branch(run.ref))) : null,
      fact('Queued', timeEl(run.created_at)),
      fact('Started', run.started_at ? timeEl(run.started_at) : 'not yet'),
      fact('Duration', durationEl(run.duration, run.started_at, run.finished_at)),
      run.finished_at ? fact('Finished', timeEl(run.finished_at)) : null,
      run.release
        ? fact('Release', h('a', {href: `/releases/${run.release}`}, `release #${run.release}`))
        : null,
      run.rerun_of
        ? fact('Re-run of', h('a', {href: `/runs/${run.rerun_of}`}, `run #${run.rerun_of}`))
        : null);
    renderActions();
  }

  let actionsKey = null;
  function renderActions() {
    if (!canTrigger) return; // read-only viewers get no buttons; the server refuses anyway
    const ended = TERMINAL.has(run.status);
    const key = `${ended}:${run.status}:${busy}`;
    if (key === actionsKey) return; // keep the focused button in place across refreshes
    actionsKey = key;
    const buttons = [];
    if (!ended) {
      buttons.push(h('button', {type: 'button', class: 'button button-danger', disabled: busy,
        onclick: cancel}, h('span', {'aria-hidden': 'true'}, '⊘ '), 'Cancel run'));
    } else {
      if (run.status !== 'succeeded') {
        buttons.push(h('button', {type: 'button', class: 'button button-primary', disabled: busy,
          onclick: () => rerun(true)}, h('span', {'aria-hidden': 'true'}, '↻ '),
        'Re-run failed jobs'));
      }
      buttons.push(h('button', {type: 'button', class: 'button', disabled: busy,
        onclick: () => rerun(false)}, h('span', {'aria-hidden': 'true'}, '↻ '), 'Re-run all jobs'));
    }
    replace(actions, buttons);
  }

  async function cancel() {
    const ok = await ctx.confirm(
      `Cancel run #${run.id} of ${run.service}? Its running steps are stopped.`,
      {confirmLabel: 'Cancel run', danger: true});
    if (!ok || disposed) return;
    busy = true;
    renderActions();
    try {
      await ctx.api(`/runs/${id}/cancel`, {method: 'POST'});
      ctx.toast(`Cancelling run #${run.id}`, 'info');
    } catch (err) {
      ctx.toast(`Could not cancel: ${err.message}`, 'error');
    } finally {
      busy = false;
      actionsKey = null;
      refresh();
    }
  }

  async function rerun(failedOnly) {
    busy = true;
    renderActions();
    try {
      const next = await ctx.api(`/runs/${id}/rerun`, {method: 'POST', body: {failed_only: failedOnly}});
      ctx.toast(failedOnly ? `Run #${next.id} re-runs the failed jobs` : `Run #${next.id} queued`,
        'success');
      ctx.navigate(`/runs/${next.id}`);
    } catch (err) {
      busy = false;
      actionsKey = null;
      renderActions();
      ctx.toast(`Could not re-run: ${err.message}`, 'error');
    }
  }

  // --- the selected job --------------------------------------------------------------------

  // Everything about the shown job; replaced when another job is chosen.
  let view = null;

  function jobOf(name) {
    return run.jobs.find((j) => j.name === name) || null;
  }

  function selectJob(name) {
    if (view && view.job === name) {
      updateJob();
      dag.update(run.jobs, selected);
      return;
    }
    selected = name;
    if (view) view.close();
    view = createJobView(name);
    dag.update(run.jobs, selected);
  }

  function updateJob() {
    if (view) view.update(jobOf(view.job));
  }

  function createJobView(name) {
    const sections = new Map(); // key (step position or SETUP) → section
    const lines = []; // {seq, key (its section), text, plain (lower case, no ANSI), row}
    const rowsBySeq = new Map();
    let source = null;
    let retry = null;
    let lastId = 0;
    let ended = false;
    let queue = [];
    let frame = null;
    let query = '';
    let matches = [];
    let current = -1;
    let searchTimer = null;
    let scrolledToFailure = false;
    let savedOpen = null;

    const head = h('div', {class: 'job-head'});
    const note = h('p', {class: 'job-note', hidden: true});
    const search = h('input', {type: 'search', id: 'log-search', autocomplete: 'off',
      placeholder: 'Text in this job’s log', 'aria-describedby': 'log-search-count'});
    const count = h('span', {id: 'log-search-count', class: 'log-search-count', role: 'status',
      'aria-live': 'polite'});
    const prev = h('button', {type: 'button', class: 'button', disabled: true,
      'aria-label': 'Previous match', onclick: () => step(-1)}, '↑');
    const next = h('button', {type: 'button', class: 'button', disabled: true,
      'aria-label': 'Next match', onclick: () => step(1)}, '↓');
    const follow = h('input', {type: 'checkbox', id: 'log-follow',
      checked: !TERMINAL.has(run.status)});
    const streamState = h('span', {class: 'log-stream-state', role: 'status'});
    const box = h('div', {class: 'steps', role: 'region', 'aria-label': `Steps and log of ${name}`,
      tabindex: '0'});

    const tools = h('div', {class: 'log-tools'},
      h('div', {class: 'log-search'},
        h('label', {for: 'log-search'}, 'Search log'),
        h('div', {class: 'log-search-row'}, search, prev, next, count)),
      h('div', {class: 'log-follow'}, follow, h('label', {for: 'log-follow'}, 'Follow log')),
      streamState);
    replace(jobPanel, head, note, tools, box);

    search.addEventListener('input', () => {
      auto = false; // someone is reading this job: do not switch it under them
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => applySearch(search.value), 120);
    });
    search.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        event.preventDefault();
        clearTimeout(searchTimer);
        // A new query already moves to its first match; Enter on the same one moves on.
        if (!applySearch(search.value)) step(event.shiftKey ? -1 : 1);
      } else if (event.key === 'Escape' && search.value) {
        search.value = '';
        applySearch('');
      }
    });
    follow.addEventListener('change', () => {
      if (follow.checked) scrollToEnd();
    });
    // Line numbers are links; following one in place would make the shell re-render the page
    // (a fragment navigation fires popstate), so the address is updated without navigating.
    box.addEventListener('click', (event) => {
      const link = event.target.closest('a.ln');
      if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
      event.preventDefault();
      const url = new URL(link.href);
      history.replaceState(history.state, '', location.pathname + location.search + url.hash);
      const target = parseAnchor(url.hash);
      if (target) showLine(target.seq);
    });

    function sectionFor(key, stepData) {
      let section = sections.get(key);
      if (section) return section;
      const summary = h('summary', {class: 'step-summary'});
      const body = h('div', {class: 'log', role: 'log', 'aria-live': 'off'});
      const details = h('details', {class: 'step', dataset: {step: String(key)}}, summary, body);
      section = {key, details, summary, body, lines: 0, wanted: false, userSet: false,
        step: stepData || null};
      details.addEventListener('toggle', () => {
        // Our own opening and closing set `wanted` first; any other toggle is the reader's.
        if (details.open !== section.wanted) {
          section.userSet = true;
          auto = false;
        }
        section.wanted = details.open;
      });
      // Keep sections in step order, the job's own lines first.
      const order = (k) => (k === SETUP ? -1 : k);
      const after = [...sections.values()].find((s) => order(s.key) > order(key));
      box.insertBefore(details, after ? after.details : null);
      sections.set(key, section);
      return section;
    }

    function setOpen(section, open) {
      if (section.details.open === open) return;
      section.wanted = open;
      section.details.open = open;
    }

    function renderSummary(section) {
      const s = section.step;
      const parts = [];
      if (s) {
        parts.push(badge(s.status), ' ', h('span', {class: 'step-name'}, s.name));
        const timed = s.duration !== null || (s.started_at && !s.finished_at);
        parts.push(h('span', {class: 'step-meta'},
          timed ? durationEl(s.duration, s.started_at, s.finished_at) : null,
          s.exit_code !== null && s.exit_code !== undefined
            ? h('span', {class: 'step-exit'}, `exit ${s.exit_code}`) : null,
          s.attempts > 1 ? h('span', null, `${s.attempts} attempts`) : null,
          h('span', {class: 'step-lines'}, `${section.lines} line${section.lines === 1 ? '' : 's'}`)));
        if (s.reason) parts.push(h('span', {class: 'step-reason'}, s.reason));
      } else {
        parts.push(h('span', {class: 'step-name'}, 'Job setup'),
          h('span', {class: 'step-meta'},
            h('span', {class: 'step-lines'}, `${section.lines} line${section.lines === 1 ? '' : 's'}`)));
      }
      replace(section.summary, parts);
    }

    function update(job) {
      if (!job) return;
      const reused = REUSED.exec(job.reason || '');
      replace(head,
        h('h2', {id: 'job-heading'}, 'Job ', h('span', {class: 'job-name'}, job.name), ' ',
          badge(job.status)),
        h('p', {class: 'job-meta'},
          h('span', null, 'Duration ', durationEl(job.duration, job.started_at, job.finished_at)),
          job.runner ? h('span', null, 'Runner ', h('code', null, job.runner)) : null,
          job.attempt > 1 ? h('span', null, `Attempt ${job.attempt}`) : null,
          job.needs && job.needs.length ? h('span', null, 'Needs ', job.needs.join(', ')) : null,
          job.reason && !reused ? h('span', {class: 'job-reason'}, job.reason) : null));
      let message = null;
      if (reused) {
        message = [`Reused from run #${reused[1]}: it succeeded there and did not run again. `,
          h('a', {href: `/runs/${reused[1]}?job=${encodeURIComponent(job.name)}`}, 'Its log'), '.'];
      } else if (job.status === 'pending') {
        const waiting = (job.needs || []).filter((n) => !TERMINAL.has((jobOf(n) || {}).status));
        message = waiting.length ? `Waiting for ${waiting.join(', ')}.` : 'Waiting to be scheduled.';
      } else if (job.status === 'queued') {
        message = 'Waiting for a runner.';
      } else if (job.status === 'skipped') {
        message = 'Skipped: this job did not run.';
      }
      // A reused job's log is in the run that ran it: no empty log here pretending otherwise.
      tools.hidden = Boolean(reused);
      box.classList.toggle('steps-reused', Boolean(reused));
      note.hidden = !message;
      replace(note, message || []);
      const anyFailedStep = job.steps.some((s) => BAD.has(s.status));
      for (const s of job.steps) {
        const section = sectionFor(s.position, s);
        section.step = s;
        renderSummary(section);
        // Open what matters (the failed step, the running one, a job's only step); never close
        // a step under the reader.
        const matters = BAD.has(s.status) || s.status === 'running' ||
          (job.steps.length === 1 && s.status !== 'pending');
        if (!section.userSet && !query && matters) {
          setOpen(section, true);
        }
      }
      const setup = sections.get(SETUP);
      if (setup) {
        renderSummary(setup);
        if (!setup.userSet && !query && BAD.has(job.status) && !anyFailedStep) setOpen(setup, true);
      }
    }

    // --- lines ---------------------------------------------------------------------------

    function connect(after) {
      const url = `/api/v1/runs/${id}/logs/stream?job=${encodeURIComponent(name)}&after=${after}`;
      source = new EventSource(url);
      streamState.textContent = TERMINAL.has(run.status) ? 'Loading log…' : '● Streaming live';
      streamState.dataset.state = 'streaming';
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
        streamState.textContent = `Log complete · ${lines.length} line${lines.length === 1 ? '' : 's'}`;
        streamState.dataset.state = 'complete';
        if (pendingAnchor) {
          ctx.toast(`Line ${pendingAnchor.seq} is not in the log of ${name}`, 'warning');
          pendingAnchor = null;
        } else {
          showFailure();
        }
      });
      source.addEventListener('error', () => {
        if (ended || disposed) return;
        // EventSource would reconnect from the start; we resume after the last line instead.
        source.close();
        source = null;
        streamState.textContent = '○ Reconnecting…';
        streamState.dataset.state = 'reconnecting';
        clearTimeout(retry);
        retry = setTimeout(() => {
          if (!disposed && view && view.job === name) connect(lastId);
        }, STREAM_RETRY_MS);
      });
    }

    function flush() {
      frame = null;
      const batch = queue;
      queue = [];
      if (!batch.length) return;
      const touched = new Set();
      let last = null;
      let unknownStep = false;
      for (const line of batch) {
        const key = line.step === null || line.step === undefined ? SETUP : line.step;
        if (key !== SETUP && !sections.has(key)) unknownStep = true;
        const section = sectionFor(key, null);
        const rule = attemptRule(section, line, (jobOf(name) || {}).attempt || 1);
        if (rule) section.body.appendChild(rule);
        const seq = line.seq;
        const anchorId = lineId(name, seq);
        const text = h('span', {class: 'lt'}, ansiToFragment(line.text));
        const row = h('div', {class: 'log-line', id: anchorId},
          h('a', {class: 'ln', href: `#${anchorId}`, tabindex: '-1', title: absTime(line.ts),
            'aria-label': `Line ${seq}`}, String(seq)),
          text);
        const record = {seq, key, text: line.text, plain: stripAnsi(line.text).toLowerCase(), row};
        lines.push(record);
        rowsBySeq.set(seq, record);
        section.body.appendChild(row);
        section.lines += 1;
        touched.add(section);
        if (query) matchLine(record, true);
        last = record;
      }
      for (const section of touched) renderSummary(section);
      if (query) renderCount();
      // A line from a step the run detail does not show as started yet: read the run again.
      if (unknownStep || batch.some((l) => (jobOf(name)?.steps || [])
        .some((s) => s.position === l.step && s.status === 'pending'))) refresh();
      if (pendingAnchor && rowsBySeq.has(pendingAnchor.seq)) {
        const seq = pendingAnchor.seq;
        pendingAnchor = null;
        showLine(seq);
      } else if (follow.checked && last) {
        const section = sections.get(last.key);
        if (!section.userSet) setOpen(section, true);
        scrollToEnd();
      }
    }

    function scrollToEnd() {
      const last = lines[lines.length - 1];
      if (!last || !last.row.offsetParent) return;
      scrollInBox(last.row, 'end');
    }

    // Scroll the log box only, not the page: the reader keeps their place on the page.
    function scrollInBox(row, where) {
      const r = row.getBoundingClientRect();
      const c = box.getBoundingClientRect();
      if (where === 'end') box.scrollTop += r.bottom - c.bottom + 4;
      else box.scrollTop += r.top - c.top - 8;
    }

    /** Open a failed run at its failure: the end of the failed step's log, in view. */
    function showFailure() {
      if (scrolledToFailure || follow.checked) return;
      scrolledToFailure = true;
      const job = jobOf(name);
      const failed = job && job.steps.find((s) => BAD.has(s.status));
      const section = failed ? sections.get(failed.position) : null;
      if (!section || !section.details.open) return;
      const rows = section.body.querySelectorAll('.log-line');
      // The error is usually the last thing the step printed.
      if (rows.length) rows[rows.length - 1].scrollIntoView({block: 'nearest'});
    }

    /** Highlight line `seq` (a link to it was opened or clicked) and bring it into view. */
    function showLine(seq) {
      const record = rowsBySeq.get(seq);
      if (!record) return;
      for (const el of box.querySelectorAll('.log-line-target')) el.classList.remove('log-line-target');
      record.row.classList.add('log-line-target');
      const section = sections.get(record.key);
      if (section && !section.details.open) {
        section.userSet = true;
        setOpen(section, true);
      }
      follow.checked = false; // the reader asked for this line; new lines must not move it
      scrolledToFailure = true;
      record.row.scrollIntoView({block: 'center'});
    }

    // --- search --------------------------------------------------------------------------

    function matchLine(record, fresh) {
      const hit = record.plain.includes(query);
      record.row.classList.toggle('log-line-match', hit);
      record.row.hidden = !hit;
      if (!fresh && !hit && record.marked) unmark(record);
      if (hit) {
        mark(record);
        matches.push(record);
      }
      return hit;
    }

    function mark(record) {
      if (record.marked) unmark(record);
      const lt = record.row.querySelector('.lt');
      const walker = document.createTreeWalker(lt, NodeFilter.SHOW_TEXT);
      const nodes = [];
      for (let n = walker.nextNode(); n; n = walker.nextNode()) nodes.push(n);
      for (const node of nodes) {
        const text = node.nodeValue;
        const lower = text.toLowerCase();
        let at = lower.indexOf(query);
        if (at < 0) continue;
        const parts = document.createDocumentFragment();
        let from = 0;
        while (at >= 0) {
          parts.appendChild(document.createTextNode(text.slice(from, at)));
          parts.appendChild(h('mark', null, text.slice(at, at + query.length)));
          from = at + query.length;
          at = lower.indexOf(query, from);
        }
        parts.appendChild(document.createTextNode(text.slice(from)));
        node.replaceWith(parts);
      }
      record.marked = true;
    }

    function unmark(record) {
      const lt = record.row.querySelector('.lt');
      lt.replaceChildren(ansiToFragment(record.text));
      record.marked = false;
    }

    function applySearch(value) {
      const q = value.trim().toLowerCase();
      if (q === query) return false;
      if (!query && q) {
        savedOpen = new Map([...sections.values()].map((s) => [s, s.details.open]));
      }
      query = q;
      matches = [];
      current = -1;
      box.classList.toggle('searching', Boolean(q));
      for (const record of lines) {
        if (q) {
          matchLine(record, false);
        } else {
          record.row.hidden = false;
          record.row.classList.remove('log-line-match', 'log-line-current');
          if (record.marked) unmark(record);
        }
      }
      const withHits = new Set(matches.map((m) => m.key));
      for (const section of sections.values()) {
        if (q) {
          section.details.classList.toggle('step-no-match', !withHits.has(section.key));
          setOpen(section, withHits.has(section.key));
        } else {
          section.details.classList.remove('step-no-match');
          if (savedOpen && savedOpen.has(section)) setOpen(section, savedOpen.get(section));
        }
      }
      if (!q) savedOpen = null;
      renderCount();
      if (matches.length) step(1);
      return true;
    }

    function renderCount() {
      prev.disabled = next.disabled = matches.length === 0;
      if (!query) {
        count.textContent = '';
        return;
      }
      const n = matches.length;
      count.textContent = n === 0 ? 'No matching lines'
        : `${current >= 0 ? `${current + 1} of ` : ''}${n} matching line${n === 1 ? '' : 's'}`;
    }

    function step(direction) {
      if (!matches.length) return;
      if (current >= 0 && matches[current]) matches[current].row.classList.remove('log-line-current');
      current = (current + direction + matches.length) % matches.length;
      const record = matches[current];
      record.row.classList.add('log-line-current');
      const section = sections.get(record.key);
      if (section && !section.details.open) setOpen(section, true);
      follow.checked = false;
      scrollInBox(record.row, 'top');
      renderCount();
    }

    function close() {
      if (source) source.close();
      source = null;
      clearTimeout(retry);
      clearTimeout(searchTimer);
      if (frame !== null) cancelAnimationFrame(frame);
    }

    const job = jobOf(name);
    update(job);
    if (job && !REUSED.test(job.reason || '')) connect(0);
    else streamState.textContent = '';
    return {job: name, update, close};
  }

  // --- refresh -----------------------------------------------------------------------------

  let loading = false;
  let again = false;
  async function refresh() {
    if (disposed) return;
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    try {
      const data = await ctx.api(`/runs/${id}`);
      if (disposed) return;
      run = data;
      refreshError.hidden = true;
      apply();
    } catch (err) {
      if (disposed) return;
      refreshError.hidden = false;
      replace(refreshError, `Could not refresh this run: ${err.message}`);
    } finally {
      loading = false;
      if (again && !disposed) {
        again = false;
        refresh();
      }
    }
  }

  function apply() {
    renderHeader();
    const names = jobNames();
    if (auto || !names.has(selected)) {
      const preferred = preferredJob(run, selected);
      if (preferred && preferred !== selected) {
        selectJob(preferred);
        return;
      }
    }
    dag.update(run.jobs, selected);
    updateJob();
  }

  /** Durations of whatever is still running, every second. */
  function tick() {
    for (const el of root.querySelectorAll('.duration[data-since]')) {
      el.textContent = duration(between(el.dataset.since));
    }
    if (!TERMINAL.has(run.status)) dag.update(run.jobs, selected);
  }

  renderHeader();
  if (selected) {
    selectJob(selected);
  } else {
    dag.update(run.jobs, selected);
    replace(jobPanel, h('h2', {id: 'job-heading'}, 'No jobs'),
      h('p', {class: 'empty'}, run.reason || 'This run has no jobs.'));
  }

  const unsubscribe = ctx.live(['dispatch', 'logs'], refresh);
  const ticker = setInterval(tick, 1000);
  const poller = setInterval(() => {
    if (!TERMINAL.has(run.status)) refresh();
  }, ACTIVE_POLL_MS);

  return () => {
    disposed = true;
    unsubscribe();
    clearInterval(ticker);
    clearInterval(poller);
    if (view) view.close();
  };
}

