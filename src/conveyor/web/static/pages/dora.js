// The DORA dashboard: GET /api/v1/dora drawn as cards, a value-stream bar and trend charts.
// The view (service, range, bucket) lives in the URL query, under the API's own parameter
// names, so a link reproduces it and maps one-to-one onto the API call (pages/dora/view.js).
// Figures are written the way `conveyor dora` writes them (cli/dora.py), so the page and the
// terminal agree (pages/dora/figures.js). The cards and charts are in pages/dora/cards.js, the
// dialog that shows what is behind a number in pages/dora/explain.js, the services side by
// side (of every service or a team) in pages/dora/portfolio.js.

import {h, clear, replace, errorBox, loadAndFollow} from '../lib/dom.js';
import {PRESETS, DEFAULT_SINCE, BUCKETS, viewOf, queryOf} from './dora/view.js';
import {lastDay} from './dora/figures.js';
import {card, charts, leadTimeSplit} from './dora/cards.js';
import {explanationDialog} from './dora/explain.js';
import {portfolioSection} from './dora/portfolio.js';

export {fmtDuration, show} from './dora/figures.js';

// The shell loads pages/dora.css with this page.
export const styled = true;

const FIVE = ['deployment_frequency', 'lead_time', 'change_failure_rate', 'recovery_time',
  'rework_rate'];
const FLOW = ['caught_before_traffic', 'incident_recovery', 'batch_size', 'work_in_progress'];
const LIVE_DEBOUNCE_MS = 1000;

export async function render(root, params, ctx) {
  let view = viewOf(params.query);
  let report = null;
  let services = [];
  let seq = 0;
  let explained = null; // {query, data}: the explain=true report of the current view
  const status = h('div', {class: 'dora-status', role: 'status', 'aria-live': 'polite'});
  const scopeLine = h('p', {class: 'dora-scope subtle'});
  const body = h('div', {class: 'dora-body'});
  const filters = h('form', {class: 'dora-filters', 'aria-label': 'What to measure'});
  const dialog = explanationDialog({report: () => report, explained: explanationData,
    api: ctx.api});
  const explain = (metric, bucket = null) => dialog.open(metric, bucket);
  const portfolio = portfolioSection({api: ctx.api,
    onTeam: (team) => setView({...view, team})});

  replace(root, h('section', {class: 'dora', 'aria-labelledby': 'dora-title'},
    h('div', {class: 'page-head'}, h('h1', {id: 'dora-title'}, 'DORA metrics'), scopeLine),
    filters, status, body, portfolio.el, dialog.el));

  function setView(next, {push = true} = {}) {
    view = next;
    const q = queryOf(view);
    const url = location.pathname + (q ? `?${q}` : '');
    // The page updates in place (focus stays on the control); the URL follows for links and
    // for the back button, which re-renders the page from the URL.
    if (url !== location.pathname + location.search) {
      if (push) history.pushState(null, '', url);
      else history.replaceState(null, '', url);
    }
    drawFilters();
    load();
  }

  // The controls are built once and kept: a reload (live, or after a change) must never take
  // a half-typed date or the focus away from someone.
  const serviceSel = h('select', {id: 'dora-service', name: 'service',
    onchange: (e) => setView({...view, service: e.target.value})});
  const rangeSel = h('select', {id: 'dora-range', name: 'range', onchange: (e) => {
    const v = e.target.value;
    if (v === 'custom') {
      const w = report ? report.window : null;
      setView({...view, since: '', from: view.from || (w ? w.from : ''),
        to: view.to || (w ? w.to : '')});
      fromIn.focus();
    } else {
      setView({...view, since: v, from: '', to: ''});
    }
  }});
  const bySel = h('select', {id: 'dora-by', name: 'by',
    onchange: (e) => setView({...view, by: e.target.value})},
  BUCKETS.map(([v, label]) => h('option', {value: v}, label)));
  const fromIn = h('input', {type: 'date', id: 'dora-from', name: 'from', required: true});
  const toIn = h('input', {type: 'date', id: 'dora-to', name: 'to',
    'aria-describedby': 'dora-to-hint'});
  const customFields = [
    h('div', {class: 'field'}, h('label', {for: 'dora-from'}, 'From'), fromIn),
    h('div', {class: 'field'}, h('label', {for: 'dora-to'}, 'To'), toIn,
      h('p', {class: 'hint', id: 'dora-to-hint'}, 'not included')),
    h('div', {class: 'field field-button'},
      h('button', {type: 'submit', class: 'button button-primary'}, 'Apply')),
  ];
  replace(filters,
    h('div', {class: 'field'}, h('label', {for: 'dora-service'}, 'Service'), serviceSel),
    h('div', {class: 'field'}, h('label', {for: 'dora-range'}, 'Time range'), rangeSel),
    customFields,
    h('div', {class: 'field'}, h('label', {for: 'dora-by'}, 'Buckets'), bySel));
  filters.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!fromIn.value) {
      fromIn.focus();
      return;
    }
    setView({...view, since: '', from: fromIn.value, to: toIn.value});
  });

  /** Bring the controls in line with the view (and the services known so far). */
  function drawFilters({inputs = true} = {}) {
    const custom = Boolean(view.from);
    const since = view.since || DEFAULT_SINCE;
    const presets = PRESETS.some(([v]) => v === since) ? PRESETS
      : [...PRESETS, [since, `Last ${since}`]];
    const names = [...new Set([...services, ...(report ? report.scope.services : []),
      ...(view.service ? [view.service] : [])])].sort();
    const options = (sel, list) => {
      const have = [...sel.options].map((o) => `${o.value}\t${o.text}`).join('\n');
      const want = list.map(([v, label]) => `${v}\t${label}`).join('\n');
      if (have !== want) replace(sel, list.map(([v, label]) => h('option', {value: v}, label)));
    };
    options(serviceSel, [['', 'All services'], ...names.map((n) => [n, n])]);
    options(rangeSel, [...presets, ['custom', 'Custom dates…']]);
    serviceSel.value = view.service;
    rangeSel.value = custom ? 'custom' : since;
    bySel.value = view.by;
    for (const field of customFields) field.hidden = !custom;
    if (inputs) {
      fromIn.value = view.from;
      toIn.value = view.to;
    }
  }

  async function load() {
    const mine = ++seq;
    const q = queryOf({...view, team: ''});
    root.querySelector('.dora')?.setAttribute('aria-busy', 'true');
    // Only the first load is announced; a refresh marks the page busy without chatter.
    if (!report) status.textContent = 'Loading…';
    try {
      const data = await ctx.api(`/dora${q ? `?${q}` : ''}`);
      if (mine !== seq) return;
      portfolio.el.hidden = false;
      portfolio.load(queryOf({...view, service: ''}), view.team);
      report = data;
      explained = null;
      clear(status);
      drawFilters({inputs: false});
      draw();
      dialog.refresh();
    } catch (err) {
      if (mine !== seq) return;
      // No figures at all rather than the previous view's under the new view's controls.
      report = null;
      explained = null;
      clear(body);
      portfolio.el.hidden = true; // the same window: the report's error says what is wrong
      scopeLine.textContent = '';
      replace(status, errorBox(err, 'The metrics could not be computed'));
    } finally {
      if (mine === seq) root.querySelector('.dora')?.removeAttribute('aria-busy');
    }
  }

  async function explanationData() {
    const q = queryOf({...view, team: ''}, {explain: true});
    if (explained && explained.query === q) return explained.data;
    const data = await ctx.api(`/dora?${q}`);
    explained = {query: q, data};
    return data;
  }

  function draw() {
    const r = report;
    const w = r.window;
    const who = r.scope.service || `all services (${r.scope.services.length})`;
    scopeLine.textContent = `${who} · ${r.scope.env_tier} · ${w.from} → ${lastDay(w.to)} ` +
      `(${w.days} days, ${w.time_zone}) · tiers: ${r.tiers.title}`;
    const per = {day: 'day', week: 'week', month: 'month'}[r.settings.by] || 'bucket';
    // A live refresh redraws everything: whoever was on a number stays on it.
    const path = focusPath(body);
    const none = nothingDeployed(r);
    replace(body,
      none ? emptyState(r) : null,
      w.note ? h('p', {class: 'dora-window-note'}, h('strong', null, 'Window: '),
        w.note + ' (choose a time range above)') : null,
      h('section', {class: 'dora-section', 'aria-labelledby': 'dora-five'},
        h('h2', {id: 'dora-five'}, 'The five metrics'),
        h('div', {class: 'metric-cards'}, FIVE.map((name) => card(r, name, explain)))),
      h('section', {class: 'dora-section', 'aria-labelledby': 'dora-split'},
        h('h2', {id: 'dora-split'}, 'Lead time by stage'),
        h('p', {class: 'subtle'}, 'Each stretch of a commit\'s way to production, from the ' +
          'points its release passed; imported history has none and is "unsplit".'),
        leadTimeSplit(r)),
      h('section', {class: 'dora-section', 'aria-labelledby': 'dora-flow'},
        h('h2', {id: 'dora-flow'}, 'Flow'),
        h('div', {class: 'metric-cards metric-cards-flow'},
          FLOW.map((name) => card(r, name, explain)))),
      // Without a deployment every bucket is empty: no trend to draw.
      none ? null : h('section', {class: 'dora-section', 'aria-labelledby': 'dora-trends'},
        h('h2', {id: 'dora-trends'}, `Trends by ${per}`),
        h('p', {class: 'subtle'}, `One mark per ${per} of the window; select one to see ` +
          'what is behind it.'),
        h('div', {class: 'charts'}, charts(r, per, explain))));
    refocus(body, path);
  }

  // --- start ---------------------------------------------------------------------------------

  drawFilters();
  ctx.api('/services').then((list) => {
    services = (list || []).map((s) => s.name);
    drawFilters({inputs: false});
  }).catch(() => {
    // The report's own list of services still fills the filter.
  });
  return loadAndFollow(ctx, ['delivery', 'incidents'], load, LIVE_DEBOUNCE_MS, () => {
    seq += 1;
    if (dialog.el.open) dialog.el.close();
  });
}

/** Whether no deployment (successful, failed or caught) ended in the report's window. */
function nothingDeployed(r) {
  return r.series.every((row) => !row.deployments && !row.cfr_deployments && !row.caught);
}

/** What a page without deployments says: why the figures are empty, and what fills them. */
function emptyState(r) {
  const tier = r.scope.env_tier;
  const narrowed = r.scope.service ? ` for ${r.scope.service}` : '';
  return h('div', {class: 'dora-empty', role: 'note', 'aria-labelledby': 'dora-empty-title'},
    h('h2', {id: 'dora-empty-title'}, `No deployment to ${tier}${narrowed} in this window`),
    h('p', null, `The figures start with the first deployment to ${tier}. To get them:`),
    h('ul', null,
      h('li', null, `Let a release go all the way to ${tier}: each deployment that ends there ` +
        'is counted.'),
      h('li', null, 'Or bring in the history of the tool you deployed with before: ',
        h('code', null, 'conveyor import FILE'), ' (docs/import.md).'),
      r.scope.service || r.window.days < 365 ? h('li', null, 'Or look further: choose ' +
        (r.scope.service ? 'all services or ' : '') + 'a longer time range above.') : null),
    h('p', {class: 'subtle'}, 'How each figure is counted: docs/metrics.md.'));
}

/** Where the focus is under `top`, as child indexes, to put it back after a redraw. */
function focusPath(top) {
  let el = document.activeElement;
  if (!el || el === top || !top.contains(el)) return null;
  const path = [];
  while (el !== top) {
    path.unshift([...el.parentNode.children].indexOf(el));
    el = el.parentNode;
  }
  return path;
}

function refocus(top, path) {
  if (!path) return;
  let el = top;
  for (const i of path) el = el && el.children[i];
  if (el && typeof el.focus === 'function') el.focus({preventScroll: true});
}
