// The DORA dashboard: GET /api/v1/dora drawn as cards, a value-stream bar and trend charts.
// The view (service, range, bucket) lives in the URL query, under the API's own parameter
// names, so a link reproduces it and maps one-to-one onto the API call. Figures are written the
// way `conveyor dora` writes them (cli/dora.py), so the page and the terminal agree.

import {h, clear, replace, errorBox, empty, debounce} from '../lib/dom.js';
import {chart, stackedBar, numberTicks, durationTicks, countTicks} from '../lib/chart.js';

// The shell loads pages/dora.css with this page.
export const styled = true;

const PRESETS = [['30d', 'Last 30 days'], ['90d', 'Last 90 days'], ['180d', 'Last 180 days'],
  ['365d', 'Last 365 days']];
const DEFAULT_SINCE = '90d';
const BUCKETS = [['week', 'Week'], ['day', 'Day'], ['month', 'Month']];
// Parameters the page has no control for but passes on from a link (docs/metrics.md).
const PASS_THROUGH = ['env_tier', 'tz', 'week_start', 'lead_time_from', 'tiers', 'look_back',
  'attribution_window'];
const FIVE = ['deployment_frequency', 'lead_time', 'change_failure_rate', 'recovery_time',
  'rework_rate'];
const FLOW = ['batch_size', 'work_in_progress'];
const SAMPLE = {
  deployment_frequency: 'deployment', lead_time: 'commit', change_failure_rate: 'deployment',
  recovery_time: 'failure', rework_rate: 'deployment', batch_size: 'deployment',
  work_in_progress: 'release',
};
const ARROW = {up: '↑', down: '↓', flat: '→'};
const TIER_ICON = {elite: '★', high: '▲', medium: '●', low: '▼'};
const STAGES = [['waiting', 'waiting'], ['ci', 'CI'], ['staging', 'staging'],
  ['approval', 'approval'], ['production', 'production'], ['unsplit', 'unsplit']];
const LIVE_DEBOUNCE_MS = 1000;
const MAX_ROWS = 1000;

// --- figures as people read them (the same rules as cli/dora.py's show() and plural()) -------

/** Python's round(): halves go to the even neighbour. */
function roundHalfEven(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Python's f"{x:.{digits}f}": toFixed, except that an exact tie rounds to even. */
function fixed(x, digits) {
  const exact = Math.abs(x).toFixed(Math.min(100, digits + 30));
  const tail = exact.slice(exact.indexOf('.') + 1 + digits);
  if (/^50*$/.test(tail)) {
    const scaled = roundHalfEven(Math.abs(x) * 10 ** digits) / 10 ** digits;
    return (x < 0 ? '-' : '') + scaled.toFixed(digits);
  }
  return x.toFixed(digits);
}

/** Python's f"{n:g}" for the small numbers shown here. */
function general(n) {
  return Number.isInteger(n) ? String(n) : String(Number(n.toPrecision(6)));
}

/** "3d 4h", "5h 12m", "47m", "30s": two units at most (metrics.dora_options.fmt_duration). */
export function fmtDuration(seconds) {
  const s = roundHalfEven(seconds);
  for (const [unit, size, sub, subsize] of [['d', 86400, 'h', 3600], ['h', 3600, 'm', 60]]) {
    if (s >= size) {
      const rest = Math.floor((s % size) / subsize);
      return `${Math.floor(s / size)}${unit}` + (rest ? ` ${rest}${sub}` : '');
    }
  }
  return s >= 60 ? `${Math.floor(s / 60)}m` : `${s}s`;
}

function plural(n, word) {
  return `${general(n)} ${word}` + (n === 1 ? '' : 's');
}

/** A figure's value as a person reads it. */
export function show(metric, value) {
  if (value === null || value === undefined) return '-';
  if (metric === 'lead_time' || metric === 'recovery_time') return fmtDuration(value);
  if (metric === 'change_failure_rate' || metric === 'rework_rate') {
    return `${fixed(value * 100, 1)} %`;
  }
  if (metric === 'deployment_frequency') return `${fixed(value, 2)} / week`;
  if (metric === 'batch_size') return plural(value, 'commit');
  return plural(value, 'release');
}

function percent0(share) {
  return `${fixed(share * 100, 0)}%`;
}

// --- the view in the URL ---------------------------------------------------------------------

function viewOf(query) {
  const view = {
    service: query.get('service') || '',
    since: query.get('since') || '',
    from: query.get('from') || '',
    to: query.get('to') || '',
    by: query.get('by') || 'week',
    extra: {},
  };
  for (const key of PASS_THROUGH) {
    if (query.get(key)) view.extra[key] = query.get(key);
  }
  return view;
}

function queryOf(view, {explain = false} = {}) {
  const q = new URLSearchParams();
  if (view.service) q.set('service', view.service);
  if (view.from) {
    q.set('from', view.from);
    if (view.to) q.set('to', view.to);
  } else if (view.since && view.since !== DEFAULT_SINCE) {
    q.set('since', view.since);
  }
  if (view.by && view.by !== 'week') q.set('by', view.by);
  for (const [k, v] of Object.entries(view.extra)) q.set(k, v);
  if (explain) q.set('explain', 'true');
  return q.toString();
}

// --- dates ----------------------------------------------------------------------------------

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function parseDay(iso) {
  const [y, m, d] = iso.split('-').map(Number);
  return new Date(Date.UTC(y, m - 1, d));
}

function dayIso(date) {
  return date.toISOString().slice(0, 10);
}

function lastDay(endIso) {
  return dayIso(new Date(parseDay(endIso).getTime() - 86400000));
}

function shortLabel(startIso, by) {
  const d = parseDay(startIso);
  return by === 'month' ? `${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()}`
    : `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}`;
}

function bucketLabel(row) {
  const last = lastDay(row.end);
  return last === row.start ? row.start : `${row.start} – ${last}`;
}

/** An RFC 3339 time as "YYYY-MM-DD HH:MM" in the report's time zone. */
function localTime(iso, zone) {
  if (!iso) return '';
  const parts = new Intl.DateTimeFormat('en-CA', {
    timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit',
    minute: '2-digit', hourCycle: 'h23',
  }).formatToParts(new Date(iso));
  const p = Object.fromEntries(parts.map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}`;
}

// --- the page --------------------------------------------------------------------------------

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
  const dialog = explanationDialog();

  replace(root, h('section', {class: 'dora', 'aria-labelledby': 'dora-title'},
    h('div', {class: 'page-head'}, h('h1', {id: 'dora-title'}, 'DORA metrics'), scopeLine),
    filters, status, body, dialog.el));

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
    const q = queryOf(view);
    root.querySelector('.dora')?.setAttribute('aria-busy', 'true');
    // Only the first load is announced; a refresh marks the page busy without chatter.
    if (!report) status.textContent = 'Loading…';
    try {
      const data = await ctx.api(`/dora${q ? `?${q}` : ''}`);
      if (mine !== seq) return;
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
      scopeLine.textContent = '';
      replace(status, errorBox(err, 'The metrics could not be computed'));
    } finally {
      if (mine === seq) root.querySelector('.dora')?.removeAttribute('aria-busy');
    }
  }

  async function explanationData() {
    const q = queryOf(view, {explain: true});
    if (explained && explained.query === q) return explained.data;
    const data = await ctx.api(`/dora?${q}`);
    explained = {query: q, data};
    return data;
  }

  function explain(metric, bucket = null) {
    dialog.open(metric, bucket);
  }

  function numberButton(metric, text, label, cls) {
    return h('button', {type: 'button', class: ['linkish', cls], 'aria-haspopup': 'dialog',
      'aria-label': `${text}: ${label} — show what is behind it`, dataset: {metric},
      onclick: () => explain(metric)}, text);
  }

  function card(name) {
    const fig = report.metrics[name];
    if (!fig) return null;
    const value = show(name, fig.value);
    const tier = fig.tier;
    const facts = [];
    const fact = (term, content) => facts.push(h('dt', null, term), h('dd', null, content));
    fact('sample', numberButton(name, plural(fig.sample_size, SAMPLE[name]),
      `${fig.title} sample size`, 'metric-sample'));
    if (fig.p90 !== undefined) {
      fact('p90', numberButton(name, show(name, fig.p90), `${fig.title} p90`, 'metric-p90'));
    }
    if (name === 'deployment_frequency') {
      fact('deploy days', numberButton(name, `${fixed(fig.deploy_days_per_week, 2)} / week`,
        'deploy days per week', 'metric-extra'));
      fact('band', fig.band);
    } else if (name === 'change_failure_rate') {
      fact('failed', numberButton(name, `${fig.failed} of ${plural(fig.deployments, 'deployment')}`,
        'failed deployments', 'metric-extra'));
    } else if (name === 'recovery_time') {
      fact('failures', numberButton(name, `${fig.failures}` +
        (fig.not_restored ? ` (${fig.not_restored} not restored yet)` : ''),
      'failures', 'metric-extra'));
    } else if (name === 'rework_rate') {
      fact('unplanned', numberButton(name,
        `${fig.unplanned} of ${plural(fig.deployments, 'deployment')}`,
        'unplanned deployments', 'metric-extra'));
    } else if (name === 'batch_size' && fig.mean !== undefined) {
      fact('mean', numberButton(name, `${fixed(fig.mean, 2)} commits`, 'mean batch size',
        'metric-extra'));
    } else if (name === 'work_in_progress') {
      const where = Object.entries(fig.by_environment || {});
      fact('where', where.length ? where.map(([env, n]) => `${env} ${n}`).join(', ') : 'none');
    }
    const trend = trendOf(name, fig);
    return h('article', {class: ['metric-card', tier ? `tier-${tier}` : 'tier-none'],
      dataset: {metric: name}, 'aria-labelledby': `metric-${name}`},
    h('h3', {id: `metric-${name}`, class: 'metric-title'}, capital(fig.title)),
    h('p', {class: 'metric-main'},
      numberButton(name, value, fig.title, 'metric-value'),
      ['lead_time', 'recovery_time', 'batch_size'].includes(name)
        ? h('span', {class: 'metric-note'}, ' median') : null),
    h('p', {class: 'metric-tier', dataset: {tier: tier || 'none'}},
      h('span', {class: 'tier-icon', 'aria-hidden': 'true'}, tier ? TIER_ICON[tier] || '●' : '–'),
      ' ', h('span', {class: 'tier-label'}, 'tier: '),
      h('span', {class: 'tier-name'}, tier || 'no tier')),
    h('p', {class: ['metric-trend', trend.cls]}, trend.text),
    h('dl', {class: 'metric-facts'}, facts));
  }

  function trendOf(name, fig) {
    if (!fig.trend) {
      return {cls: 'trend-none', text: 'no trend: nothing to compare with before'};
    }
    const word = fig.better === true ? 'better' : fig.better === false ? 'worse' : 'same';
    const dir = {up: 'up', down: 'down', flat: 'unchanged'}[fig.trend];
    return {cls: `trend-${word}`,
      text: `${ARROW[fig.trend]} ${dir} from ${show(name, fig.previous)} · ${word}`};
  }

  function draw() {
    const r = report;
    const w = r.window;
    const who = r.scope.service || `all services (${r.scope.services.length})`;
    scopeLine.textContent = `${who} · ${r.scope.env_tier} · ${w.from} → ${lastDay(w.to)} ` +
      `(${w.days} days, ${w.time_zone}) · tiers: ${r.tiers.title}`;
    const lead = r.metrics.lead_time;
    const stages = lead && lead.stages ? lead.stages : null;
    const split = stages && lead.sample_size ? stackedBar({
      title: 'Where lead time goes',
      description: 'Share of all lead time spent in each stage of the value stream, with the ' +
        'mean per commit: ' + STAGES.filter(([k]) => stages[k]).map(([k, label]) =>
        `${label} ${percent0(stages[k].share)} (${fmtDuration(stages[k].mean)})`).join(', '),
      parts: STAGES.filter(([k]) => stages[k]).map(([k, label]) => ({
        key: k, name: label, share: stages[k].share,
        text: `mean ${fmtDuration(stages[k].mean)} per commit`,
      })),
    }) : empty('No commit was deployed in this window: there is no lead time to split.');
    const per = {day: 'day', week: 'week', month: 'month'}[r.settings.by] || 'bucket';
    // A live refresh redraws everything: whoever was on a number stays on it.
    const path = focusPath(body);
    replace(body,
      h('section', {class: 'dora-section', 'aria-labelledby': 'dora-five'},
        h('h2', {id: 'dora-five'}, 'The five metrics'),
        h('div', {class: 'metric-cards'}, FIVE.map(card))),
      h('section', {class: 'dora-section', 'aria-labelledby': 'dora-split'},
        h('h2', {id: 'dora-split'}, 'Lead time by stage'),
        h('p', {class: 'subtle'}, 'Each stretch of a commit\'s way to production, from the ' +
          'points its release passed; imported history has none and is "unsplit".'),
        split),
      h('section', {class: 'dora-section', 'aria-labelledby': 'dora-flow'},
        h('h2', {id: 'dora-flow'}, 'Flow'),
        h('div', {class: 'metric-cards metric-cards-flow'}, FLOW.map(card))),
      h('section', {class: 'dora-section', 'aria-labelledby': 'dora-trends'},
        h('h2', {id: 'dora-trends'}, `Trends by ${per}`),
        h('p', {class: 'subtle'}, `One mark per ${per} of the window; select one to see ` +
          'what is behind it.'),
        h('div', {class: 'charts'}, charts(r, per))));
    refocus(body, path);
  }

  function charts(r, per) {
    const rows = r.series;
    const labels = rows.map((row) => shortLabel(row.start, r.settings.by));
    const long = rows.map(bucketLabel);
    const span = rows.length ? `${rows.length} ${per}s from ${rows[0].start} to ` +
      `${lastDay(rows[rows.length - 1].end)}` : 'no buckets';
    const col = (key) => rows.map((row) => row[key]);
    const pick = (metric) => (i) => explain(metric, rows[i]);
    const pctTicks = (max) => numberTicks(Math.max(max, 0.1));
    return [
      chart({kind: 'bar', title: `Deployments per ${per}`, className: 'chart-deployments',
        description: `Successful deployments finished in each of the ${span}.`,
        labels, long, series: [{name: 'deployments', values: col('deployments')}],
        ticks: countTicks, format: (v) => general(v), onSelect: pick('deployment_frequency')}),
      chart({kind: 'line', title: `Lead time for changes by ${per}`, className: 'chart-lead',
        description: `Median and p90 lead time of the commits deployed in each of the ${span}; ` +
          'gaps are buckets without deployed commits.',
        labels, long, ticks: durationTicks, format: fmtDuration,
        series: [{name: 'median', values: col('lead_time_median')},
          {name: 'p90', values: col('lead_time_p90')}], onSelect: pick('lead_time')}),
      chart({kind: 'bar', title: `Change failure rate by ${per}`, className: 'chart-cfr',
        description: `Failed deployments as a share of deployments in each of the ${span}.`,
        labels, long, ticks: pctTicks, format: (v) => show('change_failure_rate', v),
        series: [{name: 'change failure rate', values: col('change_failure_rate')}],
        onSelect: pick('change_failure_rate')}),
      chart({kind: 'line', title: `Recovery time by ${per}`, className: 'chart-recovery',
        description: `Median failed deployment recovery time of the failures detected in each ` +
          `of the ${span}.`,
        labels, long, ticks: durationTicks, format: fmtDuration,
        series: [{name: 'median recovery time', values: col('recovery_median')}],
        onSelect: pick('recovery_time')}),
      chart({kind: 'bar', title: `Rework rate by ${per}`, className: 'chart-rework',
        description: `Unplanned deployments as a share of all deployments in each of the ${span}.`,
        labels, long, ticks: pctTicks, format: (v) => show('rework_rate', v),
        series: [{name: 'rework rate', values: col('rework_rate')}],
        onSelect: pick('rework_rate')}),
      chart({kind: 'line', title: `Batch size by ${per}`, className: 'chart-batch',
        description: `Median commits per successful deployment in each of the ${span}.`,
        labels, long, format: (v) => plural(v, 'commit'),
        series: [{name: 'median batch size', values: col('batch_median')}],
        onSelect: pick('batch_size')}),
    ];
  }

  // --- the explanation dialog ----------------------------------------------------------------

  function explanationDialog() {
    const title = h('h2', {id: 'explain-title'});
    const definition = h('p', {class: 'explain-definition'});
    const count = h('p', {class: 'explain-count', role: 'status'});
    const content = h('div', {class: 'explain-content'});
    const close = h('button', {type: 'button', class: 'button', onclick: () => el.close()},
      'Close');
    const el = h('dialog', {class: 'explain', 'aria-labelledby': 'explain-title'},
      h('div', {class: 'explain-head'}, title, close), definition, count, content);
    // A click on the backdrop (outside the box) closes, as people expect of a dialog.
    el.addEventListener('click', (e) => {
      if (e.target === el) el.close();
    });
    let current = null;
    let token = 0;
    let opener = null;
    el.addEventListener('close', () => {
      // Back to the number that opened it, so a keyboard user keeps their place.
      if (opener && opener.isConnected) opener.focus();
      opener = null;
    });

    async function fill() {
      const mine = ++token;
      const {metric, bucket} = current;
      const fig = report && report.metrics[metric];
      title.textContent = `Behind ${fig ? fig.title : metric}` +
        (bucket ? `, ${bucketLabel(bucket)}` : '');
      definition.textContent = fig ? capital(fig.definition) : '';
      count.textContent = 'Loading…';
      clear(content);
      let data;
      try {
        data = await explanationData();
      } catch (err) {
        if (mine === token) {
          count.textContent = '';
          replace(content, errorBox(err, 'The explanation could not be loaded'));
        }
        return;
      }
      if (mine !== token) return;
      const zone = data.window.time_zone;
      const all = (data.metrics[metric] && data.metrics[metric].explanation) || [];
      const items = bucket ? all.filter((it) => {
        const day = localTime(it.time, zone).slice(0, 10);
        return day >= bucket.start && day < bucket.end;
      }) : all;
      const value = show(metric, data.metrics[metric].value);
      count.textContent = `${plural(items.length, 'item')}` +
        (bucket ? ` in this ${data.settings.by} (${all.length} in the window)` : '') +
        ` behind ${value} · times in ${zone}`;
      const links = await releaseLinks(items);
      if (mine !== token) return;
      const shown = items.slice(0, MAX_ROWS);
      const valued = shown.some((it) => it.value !== null && it.value !== undefined);
      // How they counted, in a line: "28 ok · 8 failed · 1 excluded" (the first word of each).
      const tally = new Map();
      for (const it of items) {
        const found = /^(not \w+|[a-z]+)/.exec(String(it.how));
        const word = found ? found[1] : 'other';
        tally.set(word, (tally.get(word) || 0) + 1);
      }
      if (tally.size > 6) tally.clear();
      const columns = ['time', 'kind', 'id', 'service', ...(valued ? ['value'] : []), 'how'];
      replace(content,
        tally.size > 1 ? h('p', {class: 'explain-summary'}, [...tally].map(([word, n]) =>
          `${n} ${word}`).join(' · ')) : null,
        bucket ? h('p', null, h('button', {type: 'button', class: 'button button-quiet',
          onclick: () => { current = {metric, bucket: null}; fill(); }},
        'Show the whole window')) : null,
        items.length ? h('div', {class: 'table-wrap'}, h('table', {class: 'explain-table'},
          h('caption', {class: 'visually-hidden'}, title.textContent),
          h('thead', null, h('tr', null, columns.map((c) => h('th', {scope: 'col'}, c)))),
          h('tbody', null, shown.map((it) => h('tr', {dataset: {kind: it.kind, id: it.id}},
            h('td', {class: 'nowrap'}, localTime(it.time, zone)),
            h('td', null, it.kind),
            h('td', {class: 'nowrap'}, idCell(it, links)),
            h('td', null, it.service),
            valued ? h('td', {class: 'num'}, valueOf(metric, it)) : null,
            h('td', null, it.how))))))
          : empty('Nothing: no deployment, commit, incident or release counted here.'),
        items.length > shown.length
          ? h('p', {class: 'subtle'}, `The first ${shown.length} of ${items.length} are shown; ` +
            '`conveyor dora --explain` lists them all.') : null);
    }

    return {
      el,
      open(metric, bucket) {
        current = {metric, bucket};
        if (!el.open) {
          opener = document.activeElement;
          el.showModal();
        }
        close.focus();
        fill();
      },
      refresh() {
        if (el.open && current) fill();
      },
    };
  }

  /** Conveyor's own deployments (`c12`) → their release, for a link to its page. */
  async function releaseLinks(items) {
    const wanted = new Map();
    for (const it of items) {
      for (const key of [it.kind === 'deployment' || it.kind === 'failure' ? it.id : null,
        it.deployment]) {
        const m = /^c(\d+)$/.exec(key || '');
        if (m) wanted.set(Number(m[1]), it.service);
      }
    }
    const out = new Map();
    const byService = new Set(wanted.values());
    await Promise.all([...byService].map(async (service) => {
      try {
        const deps = await ctx.api(`/deployments?service=${encodeURIComponent(service)}&limit=1000`);
        for (const d of deps) if (wanted.has(d.id)) out.set(d.id, d);
      } catch {
        // Without the map the ids are still shown, only not linked.
      }
    }));
    return out;
  }

  function depLink(key, links) {
    const m = /^c(\d+)$/.exec(key || '');
    const dep = m ? links.get(Number(m[1])) : null;
    if (dep && dep.release) {
      return h('a', {href: `/releases/${dep.release}`,
        title: `deployment ${dep.id} of release ${dep.release} to ${dep.environment}`}, key);
    }
    return h('span', {class: 'mono'}, key);
  }

  function idCell(it, links) {
    if (it.kind === 'release') return h('a', {href: `/releases/${it.id}`}, `release ${it.id}`);
    if (it.kind === 'incident' || (it.kind === 'failure' && /^\d+(\+\d+)*$/.test(it.id))) {
      return it.id.split('+').flatMap((id, i) => [i ? ' + ' : null,
        h('a', {href: `/incidents?id=${id}`}, `incident ${id}`)]);
    }
    if (it.kind === 'commit') {
      return [h('span', {class: 'sha', title: it.id}, it.id.slice(0, 12)),
        it.deployment ? [' in ', depLink(it.deployment, links)] : null];
    }
    return depLink(it.id, links);
  }

  function valueOf(metric, it) {
    if (it.value === null || it.value === undefined) return '';
    if (metric === 'lead_time' || metric === 'recovery_time') return fmtDuration(it.value);
    return general(it.value);
  }

  // --- start ---------------------------------------------------------------------------------

  drawFilters();
  ctx.api('/services').then((list) => {
    services = (list || []).map((s) => s.name);
    drawFilters({inputs: false});
  }).catch(() => {
    // The report's own list of services still fills the filter.
  });
  await load();
  const refresh = debounce(load, LIVE_DEBOUNCE_MS);
  const unsubscribe = ctx.live(['delivery', 'incidents'], refresh);
  return () => {
    refresh.cancel();
    unsubscribe();
    seq += 1;
    if (dialog.el.open) dialog.el.close();
  };
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

function capital(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : '';
}

