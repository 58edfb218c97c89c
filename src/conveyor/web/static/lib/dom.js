// Building DOM without a framework: h('a', {href: '/x', class: 'y'}, 'text', child, [more]).

const SVG_NS = 'http://www.w3.org/2000/svg';
const SVG_TAGS = new Set([
  'svg', 'g', 'path', 'rect', 'circle', 'line', 'polyline', 'polygon', 'text', 'tspan',
  'title', 'defs', 'marker', 'ellipse', 'use', 'clipPath', 'foreignObject',
]);

/**
 * Create an element. attrs: plain attributes; `class` (string or array), `style` (object or
 * string), `dataset` (object), `on<event>` (listener, e.g. onclick), boolean true/false toggles
 * the attribute, null/undefined skip it. Children: strings, numbers, nodes, arrays; null and
 * false are skipped, so `cond && h(...)` works.
 */
export function h(tag, attrs, ...children) {
  const svg = SVG_TAGS.has(tag);
  const el = svg ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'class' || key === 'className') {
      const names = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
      if (names) el.setAttribute('class', names);
    } else if (key === 'style' && typeof value === 'object') {
      for (const [prop, v] of Object.entries(value)) {
        if (v !== null && v !== undefined) el.style.setProperty(prop, String(v));
      }
    } else if (key === 'dataset') {
      for (const [k, v] of Object.entries(value)) el.dataset[k] = v;
    } else if (value === true) {
      el.setAttribute(key, '');
    } else if (!svg && (key === 'value' || key === 'checked' || key === 'selected')) {
      el[key] = value;
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false || child === true) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Remove every child of `el`; returns el. */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Replace the children of `el` with `children`. */
export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

const STATES = {
  succeeded: ['✔', 'ok'],
  success: ['✔', 'ok'],
  passed: ['✔', 'ok'],
  healthy: ['✔', 'ok'],
  approved: ['✔', 'ok'],
  resolved: ['✔', 'ok'],
  deployed: ['✔', 'ok'],
  failed: ['✖', 'bad'],
  failure: ['✖', 'bad'],
  error: ['✖', 'bad'],
  unhealthy: ['✖', 'bad'],
  rejected: ['✖', 'bad'],
  open: ['⚠', 'bad'],
  interrupted: ['✖', 'bad'],
  publish_failed: ['✖', 'bad'],
  running: ['⟳', 'active'],
  deploying: ['⟳', 'active'],
  rolling_back: ['↺', 'warn'],
  checking: ['⟳', 'active'],
  verifying: ['⟳', 'active'],
  queued: ['◷', 'wait'],
  pending: ['◷', 'wait'],
  waiting: ['◷', 'wait'],
  awaiting_approval: ['◷', 'wait'],
  created: ['◷', 'wait'],
  rolled_back: ['↺', 'warn'],
  held: ['‖', 'warn'],
  cancelled: ['⊘', 'muted'],
  cancel_requested: ['⊘', 'muted'],
  superseded: ['⊘', 'muted'],
  skipped: ['⊘', 'muted'],
  expired: ['⊘', 'muted'],
  unknown: ['?', 'muted'],
};

/**
 * A state badge: icon + text + colour, so colour is never the only signal.
 * badge('rolled_back') → <span class="badge badge-warn">↺ rolled back</span>
 */
export function badge(state, label) {
  const key = String(state || 'unknown').toLowerCase();
  const [icon, tone] = STATES[key] || ['•', 'muted'];
  return h('span', {class: ['badge', `badge-${tone}`], dataset: {state: key}},
    h('span', {class: 'badge-icon', 'aria-hidden': 'true'}, icon),
    ' ', label || key.replaceAll('_', ' '));
}

/** A <p> for "nothing here" messages. */
export function empty(text) {
  return h('p', {class: 'empty'}, text);
}

/** An error block for a failed load; `err` may be an ApiError. */
export function errorBox(err, what = 'This page could not be loaded') {
  const message = (err && err.message) || String(err);
  return h('div', {class: 'error-box', role: 'alert'},
    h('strong', null, what + ': '), message,
    err && err.hint ? h('p', {class: 'hint'}, err.hint) : null);
}

/** ``fn`` run once a burst of calls has been quiet for ``ms`` (live updates come in bursts);
 * ``.cancel()`` drops a pending run. */
export function debounce(fn, ms) {
  let timer = null;
  const run = () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
  run.cancel = () => clearTimeout(timer);
  return run;
}

/** Load a page now, then again whenever one of `topics` changes (once a burst has been quiet
 * for `ms`). Resolves to the page's cleanup: it stops following, drops a pending load and
 * calls `stop`. */
export async function loadAndFollow(ctx, topics, load, ms, stop) {
  await load();
  const refresh = debounce(load, ms);
  const unsubscribe = ctx.live(topics, refresh);
  return () => {
    refresh.cancel();
    unsubscribe();
    stop();
  };
}

/** After an action redrew what had focus (a button disabled while it worked, a card that is
 * gone): when focus has fallen to the page itself, move it to `fallback()` (an element, or
 * null to leave it), so a keyboard user goes on from there rather than from the top. */
export function refocus(fallback) {
  const active = document.activeElement;
  if (active && active !== document.body && active.isConnected) return;
  const el = fallback();
  if (el) el.focus();
}

const CONTROLS = 'a[href], button:not([disabled]), input:not([disabled]), select, textarea';

/** Redraw part of a page with `redraw()` (a live refresh) without throwing a keyboard user
 * back to the top: when focus was inside `container`, it goes to the new element of the same id
 * (a text field keeps where its caret was); failing that, unless `sameOnly` (where another
 * control could act on something else, as the next approval's Approve), to the control of the
 * same text, else the container's first control. */
export function keepingFocus(container, redraw, {sameOnly = false} = {}) {
  const active = document.activeElement;
  const had = Boolean(active) && active !== container && container.contains(active);
  const id = had ? active.id : '';
  const text = had ? active.textContent : '';
  const caret = had && typeof active.selectionStart === 'number'
    ? [active.selectionStart, active.selectionEnd, active.selectionDirection] : null;
  redraw();
  if (!had || container.contains(document.activeElement)) return;
  const controls = [...container.querySelectorAll(CONTROLS)];
  const same = id ? document.getElementById(id) : null;
  const next = sameOnly ? same
    : same || (text && controls.find((el) => el.textContent === text)) || controls[0];
  if (!next) return;
  next.focus();
  if (caret && typeof next.selectionStart === 'number') next.setSelectionRange(...caret);
}
