// A run's jobs as an SVG graph: one column per layer of `needs`, edges as curves, each job a
// real link (Tab reaches it, Enter follows it) showing its name, state (icon + text + colour)
// and duration. The graph is built once per shape and then updated in place, so a live
// update never takes the keyboard focus away from the node someone is on.

import {h} from './dom.js';
import {duration, between} from './format.js';

const NODE_W = 184;
const NODE_H = 54;
const COL_GAP = 64;
const ROW_GAP = 18;
const PAD = 10;
const NAME_CHARS = 20;

const ICONS = {
  succeeded: '✔', failed: '✖', interrupted: '✖', running: '⟳', queued: '◷', pending: '◷',
  skipped: '⊘', cancelled: '⊘',
};

/** Each job's layer: 0 without needs, else one more than the deepest job it needs. */
export function layers(jobs) {
  const byName = new Map(jobs.map((j) => [j.name, j]));
  const depth = new Map();
  const visiting = new Set();
  const walk = (name) => {
    if (depth.has(name)) return depth.get(name);
    if (visiting.has(name)) return 0; // a cycle cannot be planned; draw it flat, do not hang
    visiting.add(name);
    const needs = (byName.get(name).needs || []).filter((n) => byName.has(n));
    const d = needs.length ? 1 + Math.max(...needs.map(walk)) : 0;
    visiting.delete(name);
    depth.set(name, d);
    return d;
  };
  for (const job of jobs) walk(job.name);
  return depth;
}

/**
 * Positions: {nodes: Map(name → {x, y, layer}), edges: [{from, to}], width, height}. Within a
 * column jobs start in file order, then a few barycentre sweeps pull each next to the jobs it
 * is connected to, which removes most crossings in the small graphs pipelines have.
 */
export function layout(jobs) {
  const depth = layers(jobs);
  const names = new Set(jobs.map((j) => j.name));
  const columns = [];
  for (const job of jobs) {
    const d = depth.get(job.name);
    (columns[d] ||= []).push(job.name);
  }
  const edges = [];
  const parents = new Map(jobs.map((j) => [j.name, []]));
  const children = new Map(jobs.map((j) => [j.name, []]));
  for (const job of jobs) {
    for (const need of job.needs || []) {
      if (!names.has(need)) continue;
      edges.push({from: need, to: job.name});
      parents.get(job.name).push(need);
      children.get(need).push(job.name);
    }
  }
  const order = new Map();
  const index = () => columns.forEach((col) => col.forEach((n, i) => order.set(n, i)));
  index();
  const sweep = (cols, neighbours) => {
    for (const col of cols) {
      const weight = new Map(col.map((n, i) => {
        const near = neighbours.get(n).map((m) => order.get(m));
        return [n, near.length ? near.reduce((a, b) => a + b, 0) / near.length : i];
      }));
      col.sort((a, b) => weight.get(a) - weight.get(b));
      col.forEach((n, i) => order.set(n, i));
    }
  };
  for (let pass = 0; pass < 3; pass++) {
    sweep(columns.slice(1), parents);
    sweep(columns.slice(0, -1).reverse(), children);
  }
  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const nodes = new Map();
  columns.forEach((col, layer) => {
    // Shorter columns are centred against the tallest one.
    const offset = ((tallest - col.length) * (NODE_H + ROW_GAP)) / 2;
    col.forEach((name, i) => {
      nodes.set(name, {
        layer,
        x: PAD + layer * (NODE_W + COL_GAP),
        y: PAD + offset + i * (NODE_H + ROW_GAP),
      });
    });
  });
  return {
    nodes,
    edges,
    width: PAD * 2 + columns.length * NODE_W + Math.max(0, columns.length - 1) * COL_GAP,
    height: PAD * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP,
  };
}

// An SVG <a> (h() would make an HTML one, which SVG does not draw).
function svgLink(href, job, ...children) {
  const link = document.createElementNS('http://www.w3.org/2000/svg', 'a');
  link.setAttribute('href', href);
  link.setAttribute('class', 'dag-node');
  link.dataset.job = job;
  link.append(...children);
  return link;
}

function shapeKey(jobs) {
  return JSON.stringify(jobs.map((j) => [j.name, j.needs || []]));
}

function truncate(text, n) {
  return text.length > n ? text.slice(0, n - 1) + '…' : text;
}

/** How long the job took, or has been running (ticks when called again). */
export function jobDuration(job, now = Date.now()) {
  if (job.duration !== null && job.duration !== undefined) return job.duration;
  if (job.started_at && !job.finished_at) return between(job.started_at, new Date(now));
  return null;
}

function stateLine(job, now) {
  const seconds = jobDuration(job, now);
  return seconds === null ? job.status : `${job.status} · ${duration(seconds)}`;
}

/**
 * A job graph in `container`. options: {hrefFor(name), onSelect(name)}. Returns
 * {update(jobs, selected, now)}; call it with every fresh copy of the run.
 */
export function createDag(container, {hrefFor, onSelect}) {
  let shape = null;
  let nodeEls = new Map();
  let edgeEls = [];

  function build(jobs) {
    const {nodes, edges, width, height} = layout(jobs);
    const defs = h('defs', null,
      h('marker', {id: 'dag-arrow', viewBox: '0 0 10 10', refX: '9', refY: '5',
        markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse'},
      h('path', {d: 'M 0 0 L 10 5 L 0 10 z', class: 'dag-arrowhead'})));
    edgeEls = edges.map(({from, to}) => {
      const a = nodes.get(from);
      const b = nodes.get(to);
      const x1 = a.x + NODE_W;
      const y1 = a.y + NODE_H / 2;
      const x2 = b.x - 2;
      const y2 = b.y + NODE_H / 2;
      const bend = Math.max(24, (x2 - x1) / 2);
      const path = h('path', {
        class: 'dag-edge',
        d: `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`,
        'marker-end': 'url(#dag-arrow)',
        dataset: {from, to},
      });
      return {from, path};
    });
    nodeEls = new Map();
    const nodeGroups = jobs.map((job) => {
      const {x, y} = nodes.get(job.name);
      const title = h('title');
      const icon = h('text', {class: 'dag-icon', x: x + 14, y: y + 33, 'aria-hidden': 'true'});
      // The trailing space (not drawn) keeps the name and the state two words in the link's
      // text, as in its accessible name, rather than "buildsucceeded".
      const name = h('text', {class: 'dag-name', x: x + 34, y: y + 23},
        truncate(job.name, NAME_CHARS) + ' ');
      const state = h('text', {class: 'dag-state', x: x + 34, y: y + 42});
      const link = svgLink(hrefFor(job.name), job.name, title,
        h('rect', {class: 'dag-box', x, y, width: NODE_W, height: NODE_H, rx: 7, ry: 7}),
        h('rect', {class: 'dag-stripe', x, y, width: 6, height: NODE_H, rx: 3, ry: 3}),
        icon, name, state);
      link.addEventListener('click', (event) => {
        if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
        event.preventDefault();
        onSelect(job.name);
      });
      nodeEls.set(job.name, {link, title, icon, state});
      return link;
    });
    const svg = h('svg', {
      class: 'dag',
      role: 'group',
      'aria-label': 'Job graph: each job after the jobs it needs',
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
    }, defs, h('g', {class: 'dag-edges'}, edgeEls.map((e) => e.path)), nodeGroups);
    container.replaceChildren(svg);
  }

  function update(jobs, selected, now = Date.now()) {
    const key = shapeKey(jobs);
    if (key !== shape) {
      shape = key;
      build(jobs);
    }
    const statusOf = new Map(jobs.map((j) => [j.name, j.status]));
    for (const job of jobs) {
      const el = nodeEls.get(job.name);
      const line = stateLine(job, now);
      el.link.setAttribute('class', `dag-node dag-${job.status}`);
      el.link.dataset.state = job.status;
      // The name starts with the words the box shows (WCAG 2.5.3: someone who says "click
      // build" by voice reaches it); what only a listener needs comes after.
      el.link.setAttribute('aria-label',
        `${job.name} ${line}${job.name === selected ? ', shown below' : ''}`);
      if (job.name === selected) el.link.setAttribute('aria-current', 'true');
      else el.link.removeAttribute('aria-current');
      el.title.textContent = `${job.name}: ${line}` +
        (job.needs && job.needs.length ? `\nneeds: ${job.needs.join(', ')}` : '') +
        (job.reason ? `\n${job.reason}` : '');
      el.icon.textContent = ICONS[job.status] || '•';
      el.state.textContent = line;
    }
    for (const {from, path} of edgeEls) {
      path.setAttribute('class', `dag-edge dag-edge-${statusOf.get(from)}`);
    }
  }

  return {update};
}
