// The selected job of the run page: its head (status, duration, runner, needs), a note when
// it has not run, and its steps, each a <details> with its log, streamed live, searchable,
// with a link to every line.

import {h, replace, badge} from '../../lib/dom.js';
import {absTime} from '../../lib/format.js';
import {ansiToFragment, stripAnsi} from '../../lib/ansi.js';
import {
  TERMINAL, BAD, SETUP, REUSED, lineId, parseAnchor, durationEl, attemptRule,
} from './common.js';
import {createLogSearch} from './logsearch.js';
import {streamLog} from './logstream.js';

/**
 * Shows job `name` in `panel`. `page` is the run page's shared state: {id, ctx, run, auto,
 * pendingAnchor, disposed, jobOf(name), refresh(), showing(name)}. Returns {job, update(job),
 * close()}.
 */
export function createJobView(page, panel, name) {
  const sections = new Map(); // key (step position or SETUP) → section
  const lines = []; // {seq, key (its section), text, plain (lower case, no ANSI), row}
  const rowsBySeq = new Map();
  let stream = null;
  let scrolledToFailure = false;

  const head = h('div', {class: 'job-head'});
  const note = h('p', {class: 'job-note', hidden: true});
  const follow = h('input', {type: 'checkbox', id: 'log-follow',
    checked: !TERMINAL.has(page.run.status)});
  const streamState = h('span', {class: 'log-stream-state', role: 'status'});
  const box = h('div', {class: 'steps', role: 'region', 'aria-label': `Steps and log of ${name}`,
    tabindex: '0'});
  const search = createLogSearch({box, sections, lines, setOpen, scrollInBox, follow,
    // someone is reading this job: do not switch it under them
    reading: () => { page.auto = false; }});

  const tools = h('div', {class: 'log-tools'},
    search.element,
    h('div', {class: 'log-follow'}, follow, h('label', {for: 'log-follow'}, 'Follow log')),
    streamState);
  replace(panel, head, note, tools, box);

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

  // --- steps ---------------------------------------------------------------------------------

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
        page.auto = false;
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
    const count = h('span', {class: 'step-lines'},
      `${section.lines} line${section.lines === 1 ? '' : 's'}`);
    if (s) {
      parts.push(badge(s.status), ' ', h('span', {class: 'step-name'}, s.name));
      const timed = s.duration !== null || (s.started_at && !s.finished_at);
      parts.push(h('span', {class: 'step-meta'},
        timed ? durationEl(s.duration, s.started_at, s.finished_at) : null,
        s.exit_code !== null && s.exit_code !== undefined
          ? h('span', {class: 'step-exit'}, `exit ${s.exit_code}`) : null,
        s.attempts > 1 ? h('span', null, `${s.attempts} attempts`) : null,
        count));
      if (s.reason) parts.push(h('span', {class: 'step-reason'}, s.reason));
    } else {
      parts.push(h('span', {class: 'step-name'}, 'Job setup'), h('span', {class: 'step-meta'}, count));
    }
    replace(section.summary, parts);
  }

  function noteFor(job, reused) {
    if (reused) {
      return [`Reused from run #${reused[1]}: it succeeded there and did not run again. `,
        h('a', {href: `/runs/${reused[1]}?job=${encodeURIComponent(job.name)}`}, 'Its log'), '.'];
    }
    if (job.status === 'pending') {
      const waiting = (job.needs || []).filter((n) => !TERMINAL.has((page.jobOf(n) || {}).status));
      return waiting.length ? `Waiting for ${waiting.join(', ')}.` : 'Waiting to be scheduled.';
    }
    if (job.status === 'queued') return 'Waiting for a runner.';
    if (job.status === 'skipped') return 'Skipped: this job did not run.';
    return null;
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
    const message = noteFor(job, reused);
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
      if (!section.userSet && !search.active() && matters) {
        setOpen(section, true);
      }
    }
    const setup = sections.get(SETUP);
    if (setup) {
      renderSummary(setup);
      if (!setup.userSet && !search.active() && BAD.has(job.status) && !anyFailedStep) {
        setOpen(setup, true);
      }
    }
  }

  // --- lines ---------------------------------------------------------------------------------

  function addLines(batch) {
    const touched = new Set();
    let last = null;
    let unknownStep = false;
    for (const line of batch) {
      const key = line.step === null || line.step === undefined ? SETUP : line.step;
      if (key !== SETUP && !sections.has(key)) unknownStep = true;
      const section = sectionFor(key, null);
      const rule = attemptRule(section, line, (page.jobOf(name) || {}).attempt || 1);
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
      search.added(record);
      last = record;
    }
    for (const section of touched) renderSummary(section);
    search.addedAll();
    // A line from a step the run detail does not show as started yet: read the run again.
    if (unknownStep || batch.some((l) => (page.jobOf(name)?.steps || [])
      .some((s) => s.position === l.step && s.status === 'pending'))) page.refresh();
    if (page.pendingAnchor && rowsBySeq.has(page.pendingAnchor.seq)) {
      const seq = page.pendingAnchor.seq;
      page.pendingAnchor = null;
      showLine(seq);
    } else if (follow.checked && last) {
      const section = sections.get(last.key);
      if (!section.userSet) setOpen(section, true);
      scrollToEnd();
    }
  }

  function ended() {
    streamState.textContent = `Log complete · ${lines.length} line${lines.length === 1 ? '' : 's'}`;
    streamState.dataset.state = 'complete';
    if (page.pendingAnchor) {
      page.ctx.toast(`Line ${page.pendingAnchor.seq} is not in the log of ${name}`, 'warning');
      page.pendingAnchor = null;
    } else {
      showFailure();
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
    const job = page.jobOf(name);
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

  function close() {
    if (stream) stream.close();
    stream = null;
    search.close();
  }

  const job = page.jobOf(name);
  update(job);
  if (job && !REUSED.test(job.reason || '')) {
    stream = streamLog(page.id, name, {
      state: streamState,
      live: () => !TERMINAL.has(page.run.status),
      onBatch: addLines,
      onEnd: ended,
      wanted: () => !page.disposed && page.showing(name),
    });
  } else {
    streamState.textContent = '';
  }
  return {job: name, update, close};
}
