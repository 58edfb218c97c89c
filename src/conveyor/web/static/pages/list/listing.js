// What the runs, releases and deployments lists share: the filter state read from and written
// to the URL (so a reload or a shared link shows the same list, and back/forward step through
// filters), the filter form, keyset paging links both ways and times shown with their zone.

import {h, replace, errorBox, empty, loadAndFollow} from '../../lib/dom.js';
import {absTime, relTime} from '../../lib/format.js';

// Rows a page shows unless the URL's per_page says otherwise (1 to MAX_PAGE_SIZE); one more
// is asked for to know whether an older page exists.
export const PAGE_SIZE = 25;
const MAX_PAGE_SIZE = 100;
/** The filter field that sets the page size. */
export const PER_PAGE = {key: 'per_page', label: 'Per page', kind: 'select', any: String(PAGE_SIZE),
  options: ['10', '50', '100']};
const DATE = /^\d{4}-\d{2}-\d{2}$/;

// The paging cursors: `before` an id (older rows), or `after` one (newer rows, paging back).
const CURSORS = ['before', 'after'];

/** The filters named by `fields` (and a paging cursor) as the URL query gives them. */
export function readState(query, fields) {
  const state = {};
  for (const field of [...fields.map((f) => f.key), ...CURSORS]) {
    const value = (query.get(field) || '').trim();
    if (value) state[field] = value;
  }
  return state;
}

/** `path` with the non-empty values of `state` as its query. */
export function withQuery(path, state) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(state)) if (value) query.set(key, value);
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** How many rows a page of `state` shows. */
export function pageSize(state) {
  const n = Number(state.per_page);
  return Number.isInteger(n) && n >= 1 && n <= MAX_PAGE_SIZE ? n : PAGE_SIZE;
}

/** The API's query for `state`: the since day (local midnight) as an RFC 3339 time, and one row
 * more than a page. Throws an Error with a message for a since that is not a date. */
export function apiQuery(state) {
  const {per_page: _, ...filters} = state;
  const query = {...filters, limit: String(pageSize(state) + 1)};
  if (state.since) {
    const midnight = DATE.test(state.since) ? new Date(`${state.since}T00:00:00`) : null;
    if (!midnight || Number.isNaN(midnight.getTime())) {
      throw new Error(`"${state.since}" is not a day (YYYY-MM-DD)`);
    }
    query.since = midnight.toISOString();
  }
  return new URLSearchParams(query).toString();
}

/** "2026-12-07 14:05:09 UTC": the local time with its zone's name, the relative time on hover. */
export function zonedTime(value) {
  const el = document.createElement('time');
  const d = value ? new Date(value) : null;
  if (!d || Number.isNaN(d.getTime())) {
    el.textContent = '—';
    return el;
  }
  el.dateTime = d.toISOString();
  el.textContent = absTime(d);
  el.title = relTime(d);
  return el;
}

function control(field, value) {
  const attrs = {id: `filter-${field.key}`, name: field.key};
  if (field.kind === 'select') {
    const options = [...field.options];
    if (value && !options.includes(value)) options.push(value);
    const select = h('select', attrs, h('option', {value: ''}, field.any),
      options.map((o) => h('option', {value: o}, o.replaceAll('_', ' '))));
    select.value = value || '';
    return select;
  }
  return h('input', {...attrs, type: field.kind, value: value || '',
    placeholder: field.placeholder || null, maxlength: field.kind === 'date' ? null : '200',
    autocomplete: 'off', spellcheck: 'false'});
}

/**
 * The filter form. A changed select or date applies at once, a text field when it is left or
 * Enter is pressed; `apply(state)` gets the new filters (paging starts over).
 */
export function filterForm(fields, state, apply) {
  const form = h('form', {class: 'list-filters', role: 'search', 'aria-label': 'Filters'});
  const read = () => {
    const next = {};
    for (const field of fields) {
      const value = form.elements[field.key].value.trim();
      if (value) next[field.key] = value;
    }
    return next;
  };
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    apply(read());
  });
  form.addEventListener('change', () => apply(read()));
  const anyFilter = fields.some((f) => state[f.key]);
  replace(form,
    fields.map((field) => h('div', {class: ['field', `field-${field.kind}`]},
      h('label', {for: `filter-${field.key}`}, field.label), control(field, state[field.key]))),
    h('div', {class: 'field field-actions'},
      h('button', {type: 'submit', class: 'button'}, 'Apply'),
      anyFilter ? h('button', {type: 'button', class: 'button button-quiet',
        onclick: () => apply({})}, 'Clear filters') : null));
  return form;
}

/** The rows a page shows of what the API gave (one more than a page was asked for), and
 * whether newer and older rows exist beyond them. With `after` the API gives the rows just
 * newer than it, newest first: the page is the last of them. */
export function pageOf(state, items, size) {
  const beyond = items.length > size;
  if (state.after) {
    return {shown: items.slice(Math.max(items.length - size, 0)), newer: beyond, older: true};
  }
  return {shown: items.slice(0, size), newer: Boolean(state.before), older: beyond};
}

/** "Newest", "Newer" and "Older" links: keyset paging by the first or last id shown. */
export function pager(path, state, {shown, newer, older}, noun) {
  const at = (cursor, id) => withQuery(path, {...state, before: '', after: '', [cursor]: String(id)});
  const links = [];
  if (state.before || state.after) {
    links.push(h('a', {href: withQuery(path, {...state, before: '', after: ''}), class: 'button'},
      `⇤ Newest ${noun}`));
  }
  if (newer && shown.length) {
    links.push(h('a', {href: at('after', shown[0].id), class: 'button', rel: 'prev'},
      `← Newer ${noun}`));
  }
  if (older && shown.length) {
    links.push(h('a', {href: at('before', shown[shown.length - 1].id), class: 'button',
      rel: 'next'}, `Older ${noun} →`));
  }
  return links.length ? h('nav', {class: 'list-pager', 'aria-label': 'Pages'}, links) : null;
}

/** refs/heads/main → "main", refs/tags/v1 → "v1"; null for a bare commit. */
export function branchOf(ref) {
  if (!ref) return null;
  return ref.replace(/^refs\/(heads|tags)\//, '');
}

/** A table cell that names its column on narrow screens, where each row is a card. */
export function cell(label, ...children) {
  return h('td', {dataset: {label}}, h('span', {class: 'cell-value'}, ...children));
}

const LIVE_DEBOUNCE_MS = 300;

/**
 * Draw a list page in `root` and follow it live. `page`: {path, title, intro, noun ('runs'),
 * fields (the filter form's), columns (header names), row (item → <tr>), topics (live
 * channels)}. The filters and the page come from the URL query (`params.query`); a change of
 * filter is a new history entry, so back and forward step through them.
 */
export async function renderList(root, params, ctx, page) {
  let state = readState(params.query, page.fields);
  let seq = 0;
  const filters = h('div');
  const status = h('p', {class: 'subtle list-status', role: 'status', 'aria-live': 'polite'});
  const body = h('div', {class: 'list-body'});
  const id = `${page.noun}-title`;

  replace(root, h('section', {class: [`${page.noun}-list`, 'list-page'], 'aria-labelledby': id},
    h('div', {class: 'page-head'}, h('h1', {id}, page.title),
      h('p', {class: 'subtle'}, page.intro)),
    filters, status, body));

  function drawFilters() {
    const focused = document.activeElement && document.activeElement.id;
    replace(filters, filterForm(page.fields, state, apply));
    if (focused && focused.startsWith('filter-')) document.getElementById(focused)?.focus();
  }

  function apply(next) {
    const url = withQuery(page.path, next);
    if (url === location.pathname + location.search) return;
    history.pushState(null, '', url);
    state = next;
    drawFilters();
    load();
  }

  async function load() {
    const mine = ++seq;
    let items;
    try {
      items = await ctx.api(`${page.path}?${apiQuery(state)}`);
    } catch (err) {
      if (mine !== seq) return;
      status.textContent = '';
      replace(body, errorBox(err, `The ${page.noun} could not be listed`));
      return;
    }
    if (mine !== seq) return;
    const paged = pageOf(state, items, pageSize(state));
    const {shown} = paged;
    const filtered = Object.keys(state).some((k) => !CURSORS.includes(k) && k !== 'per_page');
    const one = page.noun.replace(/s$/, '');
    status.textContent = shown.length === 0 ? '' :
      `${shown.length} ${shown.length === 1 ? one : page.noun}` +
      (state.before ? ` older than ${one} #${state.before}` : '') +
      (state.after ? ` newer than ${one} #${state.after}` : '') +
      (paged.older && !state.after ? ', more on the next page' : '');
    const links = pager(page.path, state, paged, page.noun);
    if (shown.length === 0) {
      replace(body, empty(filtered ? `No ${page.noun} match these filters.` :
        state.before ? `No older ${page.noun}.` : state.after ? `No newer ${page.noun}.` :
          page.none), links);
      return;
    }
    replace(body, h('div', {class: 'list-table-wrap'},
      h('table', {class: ['list-table', 'table-cards', `${page.noun}-table`]},
        h('caption', {class: 'visually-hidden'}, `${page.title}, newest first`),
        h('thead', null, h('tr', null, page.columns.map((c) => h('th', {scope: 'col'}, c)))),
        h('tbody', null, shown.map(page.row)))), links);
  }

  drawFilters();
  return loadAndFollow(ctx, page.topics, load, LIVE_DEBOUNCE_MS, () => { seq += 1; });
}

/** The names `path` (an API list) gives in `key`, sorted, or none if it cannot be read. */
export async function namesFrom(ctx, path, key) {
  try {
    return [...new Set((await ctx.api(path)).map((item) => item[key]))].sort();
  } catch {
    // The filter still takes a name from the URL; the list says what went wrong, if anything.
    return [];
  }
}
