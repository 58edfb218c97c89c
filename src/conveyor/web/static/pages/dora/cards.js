// What the DORA page draws from a report: a card per metric, the lead-time split by stage
// and the trend charts. Every number is a button that opens what is behind it (explain).

import {h, empty} from '../../lib/dom.js';
import {chart, stackedBar, numberTicks, durationTicks, countTicks} from '../../lib/chart.js';
import {fixed, general, fmtDuration, plural, show, percent0, capital, shortLabel, bucketLabel,
  lastDay} from './figures.js';
import {DEFINITIONS, reasonOf} from './definitions.js';

const SAMPLE = {
  deployment_frequency: 'deployment', lead_time: 'commit', change_failure_rate: 'deployment',
  recovery_time: 'failure', rework_rate: 'deployment', batch_size: 'deployment',
  caught_before_traffic: 'deployment', incident_recovery: 'incident', work_in_progress: 'release',
};
const ARROW = {up: '↑', down: '↓', flat: '→'};
const TIER_ICON = {elite: '★', high: '▲', medium: '●', low: '▼'};
const STAGES = [['waiting', 'waiting'], ['ci', 'CI'], ['staging', 'staging'],
  ['approval', 'approval'], ['production', 'production'], ['unsplit', 'unsplit']];

function numberButton(explain, metric, text, label, cls) {
  const spoken = text === '–' ? 'no value' : text;
  return h('button', {type: 'button', class: ['linkish', cls], 'aria-haspopup': 'dialog',
    'aria-label': `${spoken}: ${label} — show what is behind it`, dataset: {metric},
    onclick: () => explain(metric)}, text);
}

/** The card of metric `name` of `report`; `explain(metric)` opens what is behind a number. */
export function card(report, name, explain) {
  const fig = report.metrics[name];
  if (!fig) return null;
  // Nothing to measure (a new install, a quiet window): a dash and why, never "null".
  const missing = fig.value === null || fig.value === undefined;
  const value = shown(name, fig.value);
  const tier = fig.tier;
  const facts = [];
  const fact = (term, content) => facts.push(h('dt', null, term), h('dd', null, content));
  const number = (...args) => numberButton(explain, name, ...args);
  fact('sample', number(plural(fig.sample_size, SAMPLE[name]),
    `${fig.title} sample size`, 'metric-sample'));
  if (fig.p90 !== undefined) {
    fact('p90', number(shown(name, fig.p90), `${fig.title} p90`, 'metric-p90'));
  }
  if (name === 'deployment_frequency') {
    fact('deploy days', number(`${orDash(fig.deploy_days_per_week, 2)} / week`,
      'deploy days per week', 'metric-extra'));
    fact('band', fig.band);
  } else if (name === 'change_failure_rate') {
    fact('failed', number(`${fig.failed} of ${plural(fig.deployments, 'deployment')}`,
      'failed deployments', 'metric-extra'));
  } else if (name === 'recovery_time') {
    fact('failures', number(`${fig.failures}` +
      (fig.not_restored ? ` (${fig.not_restored} not restored yet)` : ''),
    'failures', 'metric-extra'));
  } else if (name === 'incident_recovery') {
    fact('incidents', number(`${fig.incidents}` +
      (fig.not_restored ? ` (${fig.not_restored} not restored yet)` : ''),
    'incidents', 'metric-extra'));
  } else if (name === 'caught_before_traffic') {
    fact('share', number(fig.share === null ? '–' : `${fixed(fig.share * 100, 1)} %`,
      'share of deployments caught', 'metric-extra'));
  } else if (name === 'rework_rate') {
    fact('unplanned', number(
      `${fig.unplanned} of ${plural(fig.deployments, 'deployment')}`,
      'unplanned deployments', 'metric-extra'));
  } else if (name === 'batch_size' && fig.mean !== undefined && fig.mean !== null) {
    fact('mean', number(`${fixed(fig.mean, 2)} commits`, 'mean batch size', 'metric-extra'));
  } else if (name === 'work_in_progress') {
    const where = Object.entries(fig.by_environment || {});
    fact('where', where.length ? where.map(([env, n]) => `${env} ${n}`).join(', ') : 'none');
  }
  const trend = trendOf(name, fig);
  return h('article', {class: ['metric-card', tier ? `tier-${tier}` : 'tier-none'],
    dataset: {metric: name}, 'aria-labelledby': `metric-${name}`},
  h('h3', {id: `metric-${name}`, class: 'metric-title'}, capital(fig.title)),
  h('p', {class: 'metric-main'},
    number(value, fig.title, 'metric-value'),
    !missing && ['lead_time', 'recovery_time', 'incident_recovery', 'batch_size'].includes(name)
      ? h('span', {class: 'metric-note'}, ' median') : null),
  h('p', {class: 'metric-tier', dataset: {tier: tier || 'none'}},
    h('span', {class: 'tier-icon', 'aria-hidden': 'true'}, tier ? TIER_ICON[tier] || '●' : '–'),
    ' ', h('span', {class: 'tier-label'}, 'tier: '),
    h('span', {class: 'tier-name'}, tier || (fig.warning ? 'too few' : 'no tier'))),
  missing ? h('p', {class: 'metric-reason'}, reasonOf(name, fig)) : null,
  fig.warning ? h('p', {class: 'metric-warning'}, fig.warning) : null,
  h('p', {class: ['metric-trend', trend.cls]}, trend.text),
  h('dl', {class: 'metric-facts'}, facts),
  about(name, fig));
}

/** The card's definition behind a disclosure: a <summary> is a button to screen readers. */
function about(name, fig) {
  const text = DEFINITIONS[name] || capital(fig.definition);
  return h('details', {class: 'metric-about'},
    h('summary', null, 'What it measures',
      h('span', {class: 'visually-hidden'}, `: ${fig.title}`)),
    h('p', {class: 'metric-definition'}, text));
}

/** A figure as the card writes it: a dash, not the terminal's hyphen, for no value. */
function shown(name, x) {
  return x === null || x === undefined ? '–' : show(name, x);
}

function orDash(x, digits) {
  return x === null || x === undefined ? '–' : fixed(x, digits);
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

/** Where lead time goes: the share of each stage of the value stream, as a stacked bar. */
export function leadTimeSplit(report) {
  const lead = report.metrics.lead_time;
  const stages = lead && lead.stages ? lead.stages : null;
  if (!stages || !lead.sample_size) {
    return empty('No commit was deployed in this window: there is no lead time to split.');
  }
  return stackedBar({
    title: 'Where lead time goes',
    description: 'Share of all lead time spent in each stage of the value stream, with the ' +
      'mean per commit: ' + STAGES.filter(([k]) => stages[k]).map(([k, label]) =>
      `${label} ${percent0(stages[k].share)} (${fmtDuration(stages[k].mean)})`).join(', '),
    parts: STAGES.filter(([k]) => stages[k]).map(([k, label]) => ({
      key: k, name: label, share: stages[k].share,
      text: `mean ${fmtDuration(stages[k].mean)} per commit`,
    })),
  });
}

/** The trend charts, one mark per bucket (`per`); `explain(metric, bucket)` opens one. */
export function charts(r, per, explain) {
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
