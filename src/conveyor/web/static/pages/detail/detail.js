// What the deployment, incident and compare pages share: the number in the address checked,
// facts as a <dl>, sections with a heading, check results and logs that scroll in their box.

import {h, replace, errorBox} from '../../lib/dom.js';
import {check} from '../release.js';

/** The positive whole number `text` names, or null after saying in `root` that it is not one. */
export function numberIn(root, text, noun, title) {
  const n = Number.parseInt(text, 10);
  if (Number.isFinite(n) && String(n) === text && n >= 1) return n;
  replace(root, h('h1', null, title), errorBox({message: `"${text}" is not ${noun} number`}));
  return null;
}

/** A <dl> of [term, value] pairs; a pair whose value is null or undefined is left out. */
export function facts(pairs, label) {
  return h('dl', {class: 'detail-facts', 'aria-label': label || null},
    pairs.filter(([, value]) => value !== null && value !== undefined)
      .map(([term, value]) => [h('dt', null, term), h('dd', null, value)]));
}

/** A card with a heading that names it (for a screen reader's list of regions too). */
export function section(id, title, ...children) {
  return h('section', {class: 'detail-section', id, 'aria-labelledby': `${id}-title`},
    h('h2', {id: `${id}-title`}, title), ...children);
}

/** Check results as the release page shows them: outcome, kind, detail, observed values. */
export function checkList(checks, key, label = 'Checks') {
  return h('ul', {class: ['detail-list', 'checks'], 'aria-label': label},
    checks.map((c, i) => check({...c, data: c.data || {}}, `check-${key}-${i}`)));
}

/** Lines of a log in a box that scrolls by itself; `none` when there are none. */
export function logBlock(lines, label, none) {
  if (!lines || !lines.length) return h('p', {class: 'empty'}, none);
  // Focusable, so that a keyboard can scroll it; named apart from its section.
  return h('pre', {class: 'detail-log', tabindex: '0', 'aria-label': `${label}, the text`},
    lines.map((line) => `${typeof line === 'string' ? line : JSON.stringify(line)}\n`).join(''));
}
