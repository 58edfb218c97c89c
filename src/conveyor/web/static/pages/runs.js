// Every run, newest first: filters (service, status, branch, author, since, a search of the
// commit's subject or sha) kept in the URL, keyset paging by the last run shown, live updates.

import {h, replace, badge, errorBox, empty, loadAndFollow} from '../lib/dom.js';
import {between, duration, firstLine, shortSha} from '../lib/format.js';
import {PER_PAGE, apiQuery, cell, filterForm, pageSize, pager, readState, withQuery, zonedTime}
  from './list/listing.js';

// The shell loads pages/runs.css with this page.
export const styled = true;

const PATH = '/runs';
const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted',
  'superseded'];
const LIVE_DEBOUNCE_MS = 300;

function fields(services) {
  return [
    {key: 'service', label: 'Service', kind: 'select', any: 'All services', options: services},
    {key: 'status', label: 'Status', kind: 'select', any: 'Any status', options: STATUSES},
    {key: 'branch', label: 'Branch', kind: 'text', placeholder: 'main'},
    {key: 'author', label: 'Author', kind: 'text', placeholder: 'name'},
    {key: 'since', label: 'Since', kind: 'date'},
    {key: 'q', label: 'Search', kind: 'search', placeholder: 'commit message or sha'},
    PER_PAGE,
  ];
}

/** refs/heads/main → "main", refs/tags/v1 → "v1"; null for a bare commit. */
function branchOf(ref) {
  if (!ref) return null;
  return ref.replace(/^refs\/(heads|tags)\//, '');
}

function row(run) {
  const took = run.duration ?? (run.started_at && !run.finished_at ? between(run.started_at) : null);
  return h('tr', {dataset: {id: String(run.id)}},
    cell('Run', h('a', {href: `/runs/${run.id}`, class: 'run-link'}, `#${run.id}`)),
    cell('Service', run.service),
    cell('Branch', branchOf(run.ref) ?? h('span', {class: 'subtle'}, '—')),
    cell('Commit', h('code', {class: 'mono'}, shortSha(run.sha)), ' ',
      h('span', {class: 'run-subject'}, firstLine(run.subject))),
    cell('Author', run.author || '—'),
    cell('Status', badge(run.status)),
    cell('Started', run.started_at ? zonedTime(run.started_at) : h('span', {class: 'subtle'}, 'not yet')),
    cell('Duration', duration(took)));
}

function table(runs) {
  return h('div', {class: 'list-table-wrap'},
    h('table', {class: 'list-table runs-table'},
      h('caption', {class: 'visually-hidden'}, 'Runs, newest first'),
      h('thead', null, h('tr', null,
        ['Run', 'Service', 'Branch', 'Commit', 'Author', 'Status', 'Started', 'Duration']
          .map((name) => h('th', {scope: 'col'}, name)))),
      h('tbody', null, runs.map(row))));
}

export async function render(root, params, ctx) {
  let services = [];
  try {
    services = (await ctx.api('/services')).map((s) => s.name);
  } catch {
    // The filter still takes the service from the URL; the list says what went wrong.
  }
  const spec = fields(services);
  let state = readState(params.query, spec);
  let seq = 0;
  const filters = h('div');
  const status = h('p', {class: 'subtle list-status', role: 'status', 'aria-live': 'polite'});
  const body = h('div', {class: 'list-body'});

  replace(root, h('section', {class: 'runs-list list-page', 'aria-labelledby': 'runs-title'},
    h('div', {class: 'page-head'}, h('h1', {id: 'runs-title'}, 'Runs'),
      h('p', {class: 'subtle'}, 'Every run of every service, newest first.')),
    filters, status, body));

  function drawFilters() {
    const focused = document.activeElement && document.activeElement.id;
    replace(filters, filterForm(spec, state, apply));
    if (focused && focused.startsWith('filter-')) document.getElementById(focused)?.focus();
  }

  function apply(next) {
    const url = withQuery(PATH, next);
    if (url === location.pathname + location.search) return;
    // A new history entry per change: back and forward step through the filters.
    history.pushState(null, '', url);
    state = next;
    drawFilters();
    load();
  }

  async function load() {
    const mine = ++seq;
    let runs;
    try {
      runs = await ctx.api(`${PATH}?${apiQuery(state)}`);
    } catch (err) {
      if (mine !== seq) return;
      status.textContent = '';
      replace(body, errorBox(err, 'The runs could not be listed'));
      return;
    }
    if (mine !== seq) return;
    const size = pageSize(state);
    const more = runs.length > size;
    const shown = runs.slice(0, size);
    const filtered = Object.keys(state).some((k) => k !== 'before' && k !== 'per_page');
    status.textContent = shown.length === 0 ? '' :
      `${shown.length} run${shown.length === 1 ? '' : 's'}` +
      (state.before ? ` older than run #${state.before}` : '') +
      (more ? ', more on the next page' : '');
    if (shown.length === 0) {
      replace(body, empty(filtered ? 'No runs match these filters.' :
        state.before ? 'No older runs.' : 'No runs yet: push a commit or run `conveyor run`.'),
      pager(PATH, state, shown, false, 'runs'));
      return;
    }
    replace(body, table(shown), pager(PATH, state, shown, more, 'runs'));
  }

  drawFilters();
  return loadAndFollow(ctx, ['dispatch'], load, LIVE_DEBOUNCE_MS, () => { seq += 1; });
}
