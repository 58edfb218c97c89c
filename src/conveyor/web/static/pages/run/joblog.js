// The selected job of the run page: its head (status, duration, runner, needs), a note when
// it has not run, and its steps, each a <details> with its log, streamed live, searchable,
// with a link to every line.
//
// A log of any size: each step's lines are kept as records and shown in blocks of BLOCK lines;
// only the blocks near the view hold rows, the others are empty boxes of their height. The
// page's DOM stays bounded however long the log (a 100,000-line log is 500 blocks, a few with
// rows), and a line's row is made when it is wanted (scrolled to, linked, matched).

import {h, replace, badge} from '../../lib/dom.js';
import {absTime} from '../../lib/format.js';
import {ansiToFragment, stripAnsi} from '../../lib/ansi.js';
import {
  TERMINAL, BAD, SETUP, REUSED, lineId, parseAnchor, durationEl, attemptRule,
} from './common.js';
import {createLogSearch} from './logsearch.js';
import {streamLog} from './logstream.js';

// Lines per block of a step's log (see the top of this file).
const BLOCK = 200;

/**
 * Shows job `name` in `panel`. `page` is the run page's shared state: {id, ctx, run, auto,
 * pendingAnchor, disposed, jobOf(name), refresh(), showing(name)}. Returns {job, update(job),
 * close()}.
 */
export function createJobView(page, panel, name) {
  const sections = new Map(); // key (step position or SETUP) → section
  // {seq, key (its section), text, plain (lower case, no ANSI), block, row (while shown)}
  const lines = [];
  const rowsBySeq = new Map(); // seq → record
  let targetSeq = null; // the line a link pointed at
  const grown = new Set(); // blocks that took lines in the batch being added
  let stream = null;
  let scrolledToFailure = false;

  const head = h('div', {class: 'job-head'});
  const note = h('p', {class: 'job-note', hidden: true});
  const follow = h('input', {type: 'checkbox', id: 'log-follow',
    checked: !TERMINAL.has(page.run.status)});
  const streamState = h('span', {class: 'log-stream-state', role: 'status'});
  const box = h('div', {class: 'steps', role: 'region', 'aria-label': `Steps and log of ${name}`,
    tabindex: '0'});
  // Blocks come into view (and get rows) a little before they are seen, and lose their rows
  // once well out of it.
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const block = entry.target.block;
      if (entry.isIntersecting) renderBlock(block);
      else unrenderBlock(block);
    }
  }, {root: box, rootMargin: '600px 0px'});
  const search = createLogSearch({box, sections, lines, setOpen, scrollInBox, follow,
    rowOf, relayout,
    // someone is reading this job: do not switch it under them
    reading: () => { page.auto = false; }});

  const download = h('a', {class: 'log-download',
    href: `/api/v1/runs/${page.id}/logs/raw?job=${encodeURIComponent(name)}`, download: ''},
  'Download log');
  const tools = h('div', {class: 'log-tools'},
    search.element,
    h('div', {class: 'log-follow'}, follow, h('label', {for: 'log-follow'}, 'Follow log')),
    download,
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
      step: stepData || null, blocks: []};
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
      if (rule) place(section, {rule});
      const record = {seq: line.seq, key, text: line.text, ts: line.ts,
        plain: stripAnsi(line.text).toLowerCase(), block: null, row: null};
      lines.push(record);
      rowsBySeq.set(record.seq, record);
      search.added(record); // first: the row made in place() is marked as the search has it
      place(section, record);
      section.lines += 1;
      touched.add(section);
      last = record;
    }
    for (const section of touched) renderSummary(section);
    for (const block of grown) if (!block.rendered) sizeBlock(block);
    grown.clear();
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

  // --- blocks --------------------------------------------------------------------------------

  /** Puts a record (or an attempt's rule) at the end of its section's last block. */
  function place(section, item) {
    let block = section.blocks[section.blocks.length - 1];
    if (!block || block.items.length >= BLOCK) {
      const el = h('div', {class: 'log-block'});
      block = {el, items: [], rendered: false, section};
      el.block = block;
      section.blocks.push(block);
      section.body.appendChild(el);
      observer.observe(el);
    }
    block.items.push(item);
    grown.add(block);
    if (item.rule === undefined) item.block = block;
    if (block.rendered && search.shows(item)) block.el.appendChild(elementOf(item));
  }

  function elementOf(item) {
    if (item.rule !== undefined) return item.rule;
    const anchorId = lineId(name, item.seq);
    item.row = h('div', {class: 'log-line', id: anchorId},
      h('a', {class: 'ln', href: `#${anchorId}`, tabindex: '-1', title: absTime(item.ts),
        'aria-label': `Line ${item.seq}`}, String(item.seq)),
      h('span', {class: 'lt'}, ansiToFragment(item.text)));
    if (item.seq === targetSeq) item.row.classList.add('log-line-target');
    search.decorate(item);
    return item.row;
  }

  /** Rows for the block's lines that show (and for `wanted`, shown or not). */
  function renderBlock(block, wanted = null) {
    if (block.rendered && !wanted) return;
    block.rendered = true;
    const rows = document.createDocumentFragment();
    for (const item of block.items) {
      if (item === wanted || search.shows(item)) rows.appendChild(elementOf(item));
      else if (item.rule === undefined) item.row = null;
    }
    block.el.style.height = '';
    block.el.replaceChildren(rows);
  }

  function unrenderBlock(block) {
    if (!block.rendered) return;
    const height = block.el.offsetHeight;
    emptyBlock(block);
    block.el.style.height = height ? `${height}px` : '';
    if (!height) sizeBlock(block);
  }

  /** The block without rows (its records keep their lines). */
  function emptyBlock(block) {
    block.rendered = false;
    for (const item of block.items) if (item.rule === undefined) item.row = null;
    block.el.replaceChildren();
  }

  /** An empty block's height: its lines (those a search shows) at one text line each. */
  function sizeBlock(block) {
    const shown = block.items.filter((item) => search.shows(item)).length;
    block.el.style.height = `${shown * lineHeight()}px`;
  }

  let measured = 0;
  function lineHeight() {
    if (!measured) {
      const row = box.querySelector('.log-line:not([hidden])');
      if (row && row.offsetHeight) measured = row.offsetHeight;
    }
    return measured || 19;
  }

  /** After a search changed which lines show: every block sized again, rows made anew. */
  function relayout() {
    for (const section of sections.values()) {
      for (const block of section.blocks) {
        emptyBlock(block);
        sizeBlock(block);
        // Observed again: one already in view is reported (and given rows) anew.
        observer.unobserve(block.el);
        observer.observe(block.el);
      }
    }
  }

  /** The record's row, its block given rows first if it had none. */
  function rowOf(record) {
    if (!record.row) renderBlock(record.block, record);
    return record.row;
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
    if (!last || !rowOf(last).offsetParent) return;
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
    // The error is usually the last thing the step printed.
    const block = section.blocks[section.blocks.length - 1];
    const lastLine = block && block.items.filter((item) => item.rule === undefined).pop();
    if (lastLine) rowOf(lastLine).scrollIntoView({block: 'nearest'});
  }

  /** Highlight line `seq` (a link to it was opened or clicked) and bring it into view. */
  function showLine(seq) {
    const record = rowsBySeq.get(seq);
    if (!record) return;
    for (const el of box.querySelectorAll('.log-line-target')) el.classList.remove('log-line-target');
    targetSeq = seq;
    const section = sections.get(record.key);
    if (section && !section.details.open) {
      section.userSet = true;
      setOpen(section, true);
    }
    follow.checked = false; // the reader asked for this line; new lines must not move it
    scrolledToFailure = true;
    rowOf(record).classList.add('log-line-target');
    record.row.scrollIntoView({block: 'center'});
  }

  function close() {
    if (stream) stream.close();
    stream = null;
    observer.disconnect();
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
