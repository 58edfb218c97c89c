// SVG charts drawn from API data: bar and line charts over buckets (days, weeks, months) and a
// stacked horizontal bar of shares. Every chart is a <figure> with a visible title, an SVG with
// <title>/<desc> for screen readers, a <title> tooltip on every datum and a visually hidden
// table of the same numbers, so nothing is only a picture.

import {h} from './dom.js';

const W = 560;
const H = 220;
const M = {top: 14, right: 14, bottom: 36, left: 70};
// Colours have CSS-variable hooks so a theme can change them; the fallbacks keep the chart
// usable on a page that defines none.
const PALETTE = ['var(--chart-1, #2f6fd6)', 'var(--chart-2, #b4561a)', 'var(--chart-3, #2e8b57)'];
const DASHES = ['', '6 4', '2 3'];

let serial = 0;
const uid = (prefix) => `${prefix}-${++serial}`;

/** Round steps (1, 2, 5 × 10^n) for a plain number axis. */
export function numberTicks(max, count = 4) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  return ticksBy(step, max);
}

/** Whole-number steps for counts: never a tick at half a deployment. */
export function countTicks(max, count = 4) {
  const raw = Math.max(max, 1) / count;
  const mag = 10 ** Math.max(0, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  return ticksBy(step, Math.max(max, 1));
}

const DURATION_STEPS = [
  1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800,
  259200, 604800, 1209600, 2592000, 7776000, 15552000, 31536000,
];

/** Steps that read well as durations (minutes, hours, days, weeks) for seconds on an axis. */
export function durationTicks(max, count = 4) {
  if (!(max > 0)) return [0, 60];
  const raw = max / count;
  const step = DURATION_STEPS.find((s) => s >= raw) || Math.ceil(raw / 31536000) * 31536000;
  return ticksBy(step, max);
}

function ticksBy(step, max) {
  const out = [];
  for (let v = 0; v < max + step; v += step) {
    out.push(Number(v.toPrecision(12)));
    if (v >= max) break;
  }
  return out;
}

function tableOf(caption, labels, series, format) {
  return h('table', {class: ['chart-table', 'visually-hidden']},
    h('caption', null, caption),
    h('thead', null, h('tr', null, h('th', {scope: 'col'}, 'period'),
      series.map((s) => h('th', {scope: 'col'}, s.name)))),
    h('tbody', null, labels.map((label, i) => h('tr', null,
      h('th', {scope: 'row'}, label),
      series.map((s) => h('td', null, format(s.values[i], s)))))));
}

/**
 * A bar or line chart over buckets.
 *   kind: 'bar' | 'line'; title; description (what it shows, for screen readers);
 *   labels: one per bucket (e.g. "2024-01-01"); long: optional longer label per bucket
 *   (tooltips, table); series: [{name, values: [number|null]}] (a bar chart draws the first);
 *   format(value) → text for tooltips, the table and the y axis; ticks(max) → axis values
 *   (numberTicks by default); onSelect(index) makes every datum a control (one tab stop,
 *   arrow keys between buckets, Enter or Space selects).
 * Every bucket is one `.chart-datum` group, with or without a value, so a chart has exactly
 * one mark per bucket.
 */
export function chart({kind = 'bar', title, description, labels, long, series, format = String,
  ticks = numberTicks, onSelect = null, className = ''}) {
  const fmt = (v) => (v === null || v === undefined ? 'no data' : format(v));
  const titleId = uid('chart-title');
  const descId = uid('chart-desc');
  const names = long || labels;
  const n = labels.length;
  const values = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  const axis = ticks(Math.max(0, ...values));
  const top = axis[axis.length - 1] || 1;
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const slot = plotW / Math.max(n, 1);
  const x = (i) => M.left + slot * (i + 0.5);
  const y = (v) => M.top + plotH - (v / top) * plotH;

  const grid = axis.map((v) => h('g', {class: 'chart-tick'},
    h('line', {x1: M.left, x2: W - M.right, y1: y(v), y2: y(v),
      style: {stroke: 'var(--chart-grid, #d5d9e0)', 'stroke-width': 1}}),
    h('text', {x: M.left - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'chart-axis-label',
      style: {'font-size': '12px', fill: 'var(--chart-text, #444)'}}, format(v))));
  // Label at most ~10 buckets so the text never overlaps; the tooltips and table have them all.
  const every = Math.max(1, Math.ceil(n / 8));
  const xLabels = labels.map((label, i) => (i % every === 0 ? h('text', {
    x: x(i), y: H - M.bottom + 16, 'text-anchor': 'middle', class: 'chart-axis-label',
    style: {'font-size': '12px', fill: 'var(--chart-text, #444)'},
  }, label) : null));

  const datum = (i, marks) => {
    const tip = `${names[i]}: ` + series.map((s) =>
      (series.length > 1 ? `${s.name} ` : '') + fmt(s.values[i])).join(', ');
    const attrs = {class: 'chart-datum', dataset: {index: String(i), label: labels[i]}};
    if (onSelect) {
      // One tab stop per chart; the arrow keys move between its buckets (roving tabindex).
      Object.assign(attrs, {tabindex: i === 0 ? '0' : '-1', role: 'button', 'aria-label': tip,
        onclick: () => onSelect(i),
        onkeydown: (e) => {
          if (e.key === 'Enter' || e.key === ' ') {
            e.preventDefault();
            onSelect(i);
            return;
          }
          const all = [...e.currentTarget.ownerSVGElement.querySelectorAll('.chart-datum')];
          const to = {ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: all.length - 1}[e.key];
          if (to === undefined || to < 0 || to >= all.length) return;
          e.preventDefault();
          all.forEach((el, k) => el.setAttribute('tabindex', k === to ? '0' : '-1'));
          all[to].focus();
        }});
    }
    // A full-height transparent hit area: empty buckets get a tooltip and a target too.
    return h('g', attrs, h('title', null, tip),
      h('rect', {x: x(i) - slot / 2, y: M.top, width: slot, height: plotH,
        class: 'chart-hit', style: {fill: 'transparent'}}), marks);
  };

  let body;
  if (kind === 'bar') {
    const s = series[0];
    const bw = Math.max(2, Math.min(slot * 0.7, 48));
    body = labels.map((_, i) => {
      const v = s.values[i];
      const has = v !== null && v !== undefined;
      return datum(i, has ? h('rect', {
        x: x(i) - bw / 2, y: y(v), width: bw, height: Math.max(v > 0 ? 1 : 0, y(0) - y(v)),
        class: 'chart-bar', style: {fill: PALETTE[0]},
      }) : null);
    });
  } else {
    const lines = series.map((s, k) => {
      // A null breaks the line: an empty bucket is not a zero.
      let d = '';
      let pen = false;
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) {
          pen = false;
          return;
        }
        d += `${pen ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
        pen = true;
      });
      return d ? h('path', {d: d.trim(), class: 'chart-line', style: {fill: 'none',
        stroke: PALETTE[k % PALETTE.length], 'stroke-width': 2,
        'stroke-dasharray': DASHES[k % DASHES.length] || null}}) : null;
    });
    const points = labels.map((_, i) => datum(i, series.map((s, k) => {
      const v = s.values[i];
      if (v === null || v === undefined) return null;
      return h('circle', {cx: x(i), cy: y(v), r: 3.5, class: 'chart-point',
        style: {fill: PALETTE[k % PALETTE.length]}});
    })));
    body = [lines, points];
  }

  const svg = h('svg', {
    // An image, unless its buckets are controls: an image's children are hidden from
    // assistive technology, a group's are not.
    viewBox: `0 0 ${W} ${H}`, role: onSelect ? 'group' : 'img', 'aria-labelledby': titleId, 'aria-describedby': descId,
    class: 'chart-svg', width: '100%', preserveAspectRatio: 'xMidYMid meet',
  },
  h('title', {id: titleId}, title),
  h('desc', {id: descId}, description),
  grid,
  h('line', {x1: M.left, x2: M.left, y1: M.top, y2: M.top + plotH,
    style: {stroke: 'var(--chart-axis, #666)'}}),
  h('line', {x1: M.left, x2: W - M.right, y1: y(0), y2: y(0),
    style: {stroke: 'var(--chart-axis, #666)'}}),
  xLabels,
  body);

  const legend = series.length > 1 ? h('ul', {class: 'chart-legend'}, series.map((s, k) =>
    h('li', null, h('svg', {width: 24, height: 10, 'aria-hidden': 'true'},
      h('line', {x1: 0, x2: 24, y1: 5, y2: 5, style: {stroke: PALETTE[k % PALETTE.length],
        'stroke-width': 2, 'stroke-dasharray': DASHES[k % DASHES.length] || null}})),
    ' ', s.name))) : null;

  return h('figure', {class: ['chart', `chart-${kind}`, className]},
    h('figcaption', {class: 'chart-title'}, title),
    svg, legend,
    tableOf(`${title} (data)`, names, series, (v) => fmt(v)));
}

/**
 * A stacked horizontal bar of parts of a whole (shares that add up to 1), with a legend naming
 * each part and its text. parts: [{key, name, share, text}] — text is what the legend and the
 * tooltip say besides the percentage.
 */
export function stackedBar({title, description, parts}) {
  const titleId = uid('chart-title');
  const descId = uid('chart-desc');
  const width = 600;
  const height = 28;
  let at = 0;
  const shown = parts.filter((p) => p.share > 0);
  const pct = (share) => `${(share * 100).toFixed(0)}%`;
  const segments = shown.map((p) => {
    const w = p.share * width;
    const seg = h('g', {class: 'stack-part', dataset: {stage: p.key}},
      h('title', null, `${p.name}: ${pct(p.share)}${p.text ? ` (${p.text})` : ''}`),
      h('rect', {x: at, y: 0, width: Math.max(w, 0.5), height, class: `stack-${p.key}`,
        style: {fill: stageColour(p.key)}}),
      w > 44 ? h('text', {x: at + w / 2, y: height / 2 + 4, 'text-anchor': 'middle',
        style: {'font-size': '11px', fill: '#fff'}}, pct(p.share)) : null);
    at += w;
    return seg;
  });
  return h('figure', {class: ['chart', 'chart-stacked']},
    h('figcaption', {class: 'chart-title'}, title),
    h('svg', {viewBox: `0 0 ${width} ${height}`, role: 'img', class: 'chart-svg',
      'aria-labelledby': titleId, 'aria-describedby': descId, width: '100%', preserveAspectRatio: 'none',
      height: String(height)},
    h('title', {id: titleId}, title), h('desc', {id: descId}, description),
    shown.length ? segments : h('rect', {x: 0, y: 0, width, height,
      style: {fill: 'var(--chart-grid, #d5d9e0)'}})),
    h('ul', {class: 'stack-legend'}, parts.map((p) => h('li', {dataset: {stage: p.key}},
      h('span', {class: 'stack-swatch', 'aria-hidden': 'true',
        style: {background: stageColour(p.key)}}),
      h('span', {class: 'stack-name'}, p.name), ' ',
      h('span', {class: 'stack-share'}, pct(p.share)),
      p.text ? h('span', {class: 'stack-text'}, ` · ${p.text}`) : null))));
}

const STAGE_COLOURS = {
  waiting: 'var(--stage-waiting, #8a6d3b)',
  ci: 'var(--stage-ci, #2f6fd6)',
  staging: 'var(--stage-staging, #6a4fb3)',
  approval: 'var(--stage-approval, #b4561a)',
  production: 'var(--stage-production, #2e8b57)',
  unsplit: 'var(--stage-unsplit, #7a7f87)',
};

function stageColour(key) {
  return STAGE_COLOURS[key] || PALETTE[0];
}
