// Searching a job's log: the lines that contain the text stay (marked), the others hide, and
// the steps without a match close; ↑ ↓ and Enter move between matches.

import {h} from '../../lib/dom.js';

/**
 * `log` is the job view's log: {box, sections (key → section), lines (records in order),
 * setOpen(section, open), scrollInBox(row, where), follow (the checkbox), rowOf(record) (its
 * row, made if it had none), relayout() (rows made again after the lines shown changed),
 * reading() (someone is reading this job: the page must not switch it)}. Returns the search
 * box's element and what the log tells it: added(record) for each new line, then addedAll()
 * after a batch; decorate(record) for each row made; shows(item) whether a line is shown.
 */
export function createLogSearch(log) {
  const {box, sections, lines, setOpen, scrollInBox, follow, rowOf, relayout} = log;
  let query = '';
  let matches = [];
  let current = -1;
  let timer = null;
  let savedOpen = null;

  const search = h('input', {type: 'search', id: 'log-search', autocomplete: 'off',
    placeholder: 'Text in this job’s log', 'aria-describedby': 'log-search-count'});
  const count = h('span', {id: 'log-search-count', class: 'log-search-count', role: 'status',
    'aria-live': 'polite'});
  const prev = h('button', {type: 'button', class: 'button', disabled: true,
    'aria-label': 'Previous match', onclick: () => step(-1)}, '↑');
  const next = h('button', {type: 'button', class: 'button', disabled: true,
    'aria-label': 'Next match', onclick: () => step(1)}, '↓');
  const element = h('div', {class: 'log-search'},
    h('label', {for: 'log-search'}, 'Search log'),
    h('div', {class: 'log-search-row'}, search, prev, next, count));

  search.addEventListener('input', () => {
    log.reading();
    clearTimeout(timer);
    timer = setTimeout(() => applySearch(search.value), 120);
  });
  search.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') {
      event.preventDefault();
      clearTimeout(timer);
      // A new query already moves to its first match; Enter on the same one moves on.
      if (!applySearch(search.value)) step(event.shiftKey ? -1 : 1);
    } else if (event.key === 'Escape' && search.value) {
      search.value = '';
      applySearch('');
    }
  });

  function matchLine(record) {
    record.hit = record.plain.includes(query);
    if (record.hit) matches.push(record);
  }

  /** A row just made for `record`: marked, hidden or current as the search has it. */
  function decorate(record) {
    if (!query) return;
    record.row.classList.toggle('log-line-match', record.hit);
    record.row.hidden = !record.hit;
    if (record.hit) mark(record.row);
    if (current >= 0 && matches[current] === record) record.row.classList.add('log-line-current');
  }

  function mark(row) {
    const lt = row.querySelector('.lt');
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
    if (q) for (const record of lines) matchLine(record);
    // Rows are made again, as the search now shows them.
    relayout();
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
    const was = current >= 0 ? matches[current] : null;
    if (was && was.row) was.row.classList.remove('log-line-current');
    current = (current + direction + matches.length) % matches.length;
    const record = matches[current];
    const section = sections.get(record.key);
    if (section && !section.details.open) setOpen(section, true);
    const row = rowOf(record);
    row.classList.add('log-line-current');
    follow.checked = false;
    scrollInBox(row, 'top');
    renderCount();
  }

  return {
    element,
    /** Whether a search is on (the log then leaves opening and closing steps to it). */
    active: () => Boolean(query),
    added(record) {
      if (query) matchLine(record);
    },
    decorate,
    /** Whether `item` (a line, or an attempt's rule) is shown: every one, or the matches. */
    shows: (item) => !query || item.rule !== undefined || Boolean(item.hit),
    addedAll() {
      if (query) renderCount();
    },
    close() {
      clearTimeout(timer);
    },
  };
}
