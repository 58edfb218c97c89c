// Incidents: open and resolved, with the deployment each is blamed on and how long service took
// to come back. Resolving is for those who may trigger (the server checks too). The view (tab,
// service, a highlighted incident) lives in the URL query so it can be linked.

import {h, clear, replace, badge, errorBox, empty, loadAndFollow} from '../lib/dom.js';
import {timeEl} from '../lib/format.js';

// The shell loads pages/incidents.css with this page.
export const styled = true;

const TABS = [['open', 'Open'], ['resolved', 'Resolved'], ['all', 'All']];
const SOURCES = {
  alertmanager: 'alert', manual: 'person', deployment: 'check', import: 'import',
};
const HOW = {explicit: 'explicitly', window: 'by window', none: 'not attributed'};
const LIMIT = 500;
const COLUMNS = ['status', 'incident', 'service', 'environment', 'source', 'opened', 'resolved',
  'recovery time', 'deployment'];
const LIVE_DEBOUNCE_MS = 300;

/** "3d 4h", "5h 12m", "47m", "30s" — as the DORA page and `conveyor dora` write durations. */
export function recovery(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  // Python's round() (halves to even), as fmt_duration does on the server.
  const f = Math.floor(seconds);
  const s = seconds - f > 0.5 || (seconds - f === 0.5 && f % 2 === 1) ? f + 1 : f;
  for (const [unit, size, sub, subsize] of [['d', 86400, 'h', 3600], ['h', 3600, 'm', 60]]) {
    if (s >= size) {
      const rest = Math.floor((s % size) / subsize);
      return `${Math.floor(s / size)}${unit}` + (rest ? ` ${rest}${sub}` : '');
    }
  }
  return s >= 60 ? `${Math.floor(s / 60)}m` : `${s}s`;
}

/** Resolve `incident` once confirmed, `button` disabled meanwhile; says how it went in a
 * toast and resolves to whether it was resolved. */
export async function resolveIncident(ctx, incident, button) {
  const ok = await ctx.confirm(`Resolve incident #${incident.id} “${incident.title}” ` +
    `(${incident.service})? Its recovery time ends now.`, {confirmLabel: 'Resolve'});
  if (!ok) return false;
  button.disabled = true;
  try {
    await ctx.api(`/incidents/${incident.id}/resolve`, {method: 'POST', body: {}});
  } catch (err) {
    button.disabled = false;
    ctx.toast(`Incident #${incident.id} was not resolved: ${err.message}`, 'error');
    return false;
  }
  ctx.toast(`Incident #${incident.id} resolved`, 'success');
  return true;
}

export async function render(root, params, ctx) {
  const q = params.query;
  const focusId = q.get('id') ? Number(q.get('id')) : null;
  let tab = TABS.some(([k]) => k === q.get('status')) ? q.get('status') : null;
  let service = q.get('service') || '';
  let incidents = [];
  let services = [];
  let seq = 0;
  const status = h('div', {class: 'incidents-status', role: 'status', 'aria-live': 'polite'});
  const tabs = h('div', {role: 'tablist', 'aria-label': 'Which incidents'});
  const panel = h('div', {role: 'tabpanel', id: 'incidents-panel', tabindex: '0'});
  const filter = h('div', {class: 'incidents-filter'});

  replace(root, h('section', {class: 'incidents', 'aria-labelledby': 'incidents-title'},
    h('div', {class: 'page-head'}, h('h1', {id: 'incidents-title'}, 'Incidents'),
      h('p', {class: 'subtle'}, 'Production failures, from failed checks, alerts, people ' +
        'and imports.')),
    filter, status, tabs, panel));

  function syncUrl() {
    const next = new URLSearchParams();
    if (tab && tab !== 'open') next.set('status', tab);
    if (service) next.set('service', service);
    if (focusId) next.set('id', String(focusId));
    const url = location.pathname + (next.toString() ? `?${next}` : '');
    if (url !== location.pathname + location.search) history.replaceState(null, '', url);
  }

  function drawFilter() {
    const names = [...new Set([...services, ...incidents.map((i) => i.service),
      ...(service ? [service] : [])])].sort();
    const sel = h('select', {id: 'incidents-service', onchange: (e) => {
      service = e.target.value;
      syncUrl();
      load();
    }}, h('option', {value: ''}, 'All services'),
    names.map((n) => h('option', {value: n}, n)));
    sel.value = service;
    const hadFocus = document.activeElement && document.activeElement.id === 'incidents-service';
    replace(filter, h('div', {class: 'field'},
      h('label', {for: 'incidents-service'}, 'Service'), sel));
    if (hadFocus) sel.focus();
  }

  function counts() {
    const open = incidents.filter((i) => i.status === 'open').length;
    return {open, resolved: incidents.length - open, all: incidents.length};
  }

  function drawTabs() {
    const n = counts();
    const focused = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.tab : null;
    const buttons = TABS.map(([key, label]) => h('button', {
      type: 'button', role: 'tab', id: `incidents-tab-${key}`, 'aria-controls': 'incidents-panel',
      'aria-selected': String(key === tab), tabindex: key === tab ? '0' : '-1',
      dataset: {tab: key},
      onclick: () => select(key),
      onkeydown: (e) => {
        // Arrow keys move between tabs, as in every tab list.
        const i = TABS.findIndex(([k]) => k === key);
        const step = {ArrowRight: 1, ArrowLeft: -1}[e.key];
        if (!step) return;
        e.preventDefault();
        select(TABS[(i + step + TABS.length) % TABS.length][0], true);
      },
    }, `${label} `, h('span', {class: 'count'}, `(${n[key]})`)));
    replace(tabs, buttons);
    panel.setAttribute('aria-labelledby', `incidents-tab-${tab}`);
    if (focused) tabs.querySelector(`[data-tab="${focused}"]`)?.focus();
  }

  function select(key, focus = false) {
    tab = key;
    syncUrl();
    drawTabs();
    drawTable();
    if (focus) tabs.querySelector(`[data-tab="${key}"]`)?.focus();
  }

  function deploymentCell(i) {
    const how = (i.attribution && i.attribution.how) || 'none';
    const detail = (i.attribution && i.attribution.detail) || '';
    const what = [];
    if (i.deployment && i.release) {
      what.push(h('a', {href: `/deployments/${i.deployment}`},
        `deployment ${i.deployment}`), ' of ',
      h('a', {href: `/releases/${i.release}`}, i.version ? `release ${i.version}` :
        `release ${i.release}`));
    } else if (i.release) {
      what.push(h('a', {href: `/releases/${i.release}`}, `release ${i.version || i.release}`));
    } else if (i.deployment_key) {
      what.push(h('span', {class: 'mono'}, i.deployment_key));
    } else {
      what.push(h('span', {class: 'subtle'}, 'none'));
    }
    return h('td', {class: 'incident-deployment'}, what,
      h('div', {class: 'attribution subtle', title: detail, dataset: {how}}, HOW[how] || how));
  }

  function row(i) {
    const env = i.environment;
    const resolvedBy = i.resolved_by ? `resolved ${i.resolved_by}` : '';
    const canResolve = ctx.me && ctx.me.can && ctx.me.can.trigger && i.status === 'open';
    const restored = i.restored_by ? `restored by ${i.restored_by}` : '';
    return h('tr', {id: `incident-${i.id}`, dataset: {id: String(i.id), status: i.status},
      class: i.id === focusId ? 'is-focus' : null},
    h('td', null, badge(i.status)),
    h('td', {class: 'incident-title'}, h('span', {class: 'subtle'}, `#${i.id} `),
      h('a', {href: `/incidents/${i.id}`}, i.title)),
    h('td', null, i.service),
    h('td', null, env ? h('a', {href: `/services/${encodeURIComponent(i.service)}/environments/` +
      encodeURIComponent(env)}, env) : h('span', {class: 'subtle'}, '—')),
    h('td', {title: i.source}, SOURCES[i.source] || i.source),
    h('td', {class: 'nowrap'}, timeEl(i.opened_at)),
    h('td', {class: 'nowrap', title: resolvedBy}, i.resolved_at ? timeEl(i.resolved_at) : '—'),
    h('td', {class: ['num', 'incident-recovery'], title: restored},
      i.recovery_seconds === null || i.recovery_seconds === undefined
        ? h('span', {class: 'subtle'}, i.status === 'open' ? 'still open' : '—')
        : recovery(i.recovery_seconds)),
    deploymentCell(i),
    h('td', {class: 'actions-cell'}, canResolve ? h('button', {
      type: 'button', class: 'button', 'aria-label': `Resolve incident ${i.id}: ${i.title}`,
      onclick: (e) => resolve(i, e.currentTarget),
    }, 'Resolve') : null));
  }

  function drawTable() {
    const path = focusPath(panel);
    const shown = incidents.filter((i) => tab === 'all' || i.status === tab);
    if (!shown.length) {
      replace(panel, empty(tab === 'open' ? 'No open incidents. ✔' : 'No incidents here.'));
      return;
    }
    const rows = shown.map(row);
    // Each cell says its column, for the one-card-per-row layout of a phone (.table-cards).
    for (const tr of rows) {
      [...tr.children].forEach((td, n) => { if (COLUMNS[n]) td.dataset.label = COLUMNS[n]; });
    }
    replace(panel, h('div', {class: 'table-wrap'},
      h('table', {class: ['incidents-table', 'table-cards']},
      h('caption', {class: 'visually-hidden'}, `${TABS.find(([k]) => k === tab)[1]} incidents`),
      h('thead', null, h('tr', null, [...COLUMNS, ''].map((c, n) =>
        h('th', {scope: 'col', class: n === 7 ? 'num' : null},
          c || h('span', {class: 'visually-hidden'}, 'actions'))))),
      h('tbody', null, rows))),
    incidents.length >= LIMIT ? h('p', {class: 'subtle'},
      `The latest ${LIMIT} incidents are shown.`) : null);
    refocus(panel, path);
  }

  async function resolve(incident, button) {
    if (!(await resolveIncident(ctx, incident, button))) return;
    await load();
    // The row left the Open tab: keep the keyboard somewhere sensible.
    tabs.querySelector('[aria-selected="true"]')?.focus();
  }

  async function load() {
    const mine = ++seq;
    const query = new URLSearchParams({status: 'all', limit: String(LIMIT)});
    if (service) query.set('service', service);
    try {
      const data = await ctx.api(`/incidents?${query}`);
      if (mine !== seq) return;
      incidents = data;
      clear(status);
      if (!tab) {
        // Start where the linked incident is, else on open ones if any.
        const target = focusId && incidents.find((i) => i.id === focusId);
        tab = target ? target.status : (incidents.some((i) => i.status === 'open') ? 'open' : 'all');
      }
      drawFilter();
      drawTabs();
      drawTable();
      const target = focusId ? panel.querySelector(`#incident-${focusId}`) : null;
      if (target && mine === 1) target.scrollIntoView({block: 'center'});
    } catch (err) {
      if (mine !== seq) return;
      replace(status, errorBox(err, 'The incidents could not be loaded'));
    }
  }

  ctx.api('/services').then((list) => {
    services = (list || []).map((s) => s.name);
    drawFilter();
  }).catch(() => {});
  return loadAndFollow(ctx, ['incidents', 'delivery'], load, LIVE_DEBOUNCE_MS, () => {
    seq += 1;
  });
}

/** Where the focus is in the table: which incident's row, and which control in it. */
function focusPath(top) {
  const el = document.activeElement;
  const row = el && top.contains(el) ? el.closest('tr[data-id]') : null;
  if (!row) return null;
  return {id: row.dataset.id, index: [...row.querySelectorAll('a, button')].indexOf(el)};
}

/** Back on the same incident (rows move as incidents come and go), if it is still shown. */
function refocus(top, at) {
  if (!at) return;
  const row = top.querySelector(`tr[data-id="${at.id}"]`);
  const el = row ? row.querySelectorAll('a, button')[at.index] : null;
  if (el) el.focus({preventScroll: true});
}

