// One incident: what it is about (the alert behind it, with its labels and annotations), the
// deployment and release it is blamed on and why, when it opened, was restored and resolved
// (with their zones), and the recovery time once it is resolved. Resolving is for those who
// may trigger (the server checks too). Follows incidents and delivery live.

import {h, replace, badge, errorBox} from '../lib/dom.js';
import {envPath, timeEl} from '../lib/format.js';
import {httpHref} from '../lib/urls.js';
import {recovery, resolveIncident} from './incidents.js';
import {facts, numberIn, section} from './detail/detail.js';

// The shell loads pages/incident.css with this page.
export const styled = true;

const SOURCES = {
  alertmanager: 'an Alertmanager alert', manual: 'a person', api: 'a person (API)',
  cli: 'a person (CLI)', deployment: 'a failed check', import: 'an import',
};
const HOW = {
  explicit: 'named by whoever opened it',
  window: 'the deployment that finished last before it, within the attribution window',
  none: 'not attributed to a deployment',
};

export async function render(root, params, ctx) {
  const id = numberIn(root, params.id, 'an incident', 'Incident');
  if (id === null) return undefined;
  let last = null;
  replace(root, h('p', {class: 'loading'}, 'Loading…'));

  async function load() {
    let incident;
    let deployment = null;
    try {
      incident = await ctx.api(`/incidents/${id}`);
      if (incident.deployment) {
        deployment = await ctx.api(`/deployments/${incident.deployment}`).catch(() => null);
      }
    } catch (err) {
      last = null;
      replace(root, h('h1', null, `Incident ${id}`),
        errorBox(err, 'This incident could not be loaded'));
      return;
    }
    const signature = JSON.stringify([incident, deployment && deployment.status]);
    if (signature === last) return;
    last = signature;
    const focused = document.activeElement && root.contains(document.activeElement);
    replace(root, page(incident, deployment));
    // A live redraw while the keyboard was on the page keeps it there.
    if (focused) root.querySelector('.incident-status')?.focus();
  }

  function page(i, dep) {
    const canResolve = ctx.me && ctx.me.can && ctx.me.can.trigger && i.status === 'open';
    return h('article', {class: ['detail-page', 'incident-page'], 'aria-labelledby': 'inc-title'},
      h('div', {class: 'page-head'},
        h('h1', {id: 'inc-title'}, h('span', {class: 'subtle-prefix'}, `Incident #${i.id} `),
          i.title),
        h('span', {class: 'incident-status', tabindex: '-1'}, badge(i.status)),
        canResolve ? h('div', {class: 'actions'}, h('button', {type: 'button', class: 'button',
          onclick: (e) => resolve(i, e.currentTarget)}, 'Resolve')) : null),
      section('inc-times', 'When', times(i)),
      section('inc-blame', 'Blamed on', blame(i, dep)),
      section('inc-alert', 'Alert', alert(i)),
      h('p', null, h('a', {href: `/incidents?status=all&service=${encodeURIComponent(i.service)}` +
        `&id=${i.id}`}, `All incidents of ${i.service}`)));
  }

  async function resolve(incident, button) {
    if (!(await resolveIncident(ctx, incident, button))) return;
    await load();
    // The button is gone: keep the keyboard on the page, at the incident's status.
    root.querySelector('.incident-status')?.focus();
  }

  await load();
  return ctx.live(['incidents', 'delivery'], () => { load(); });
}

function times(i) {
  const open = i.status === 'open';
  return facts([
    ['Service', i.service],
    ['Environment', i.environment
      ? h('a', {href: envPath(i.service, i.environment)}, i.environment)
      : h('span', {class: 'subtle'}, 'not named')],
    ['Opened', [timeEl(i.opened_at), h('span', {class: 'subtle'},
      ` by ${SOURCES[i.source] || i.source}`)]],
    ['Restored', i.restored_at
      ? [timeEl(i.restored_at), i.restored_by ? h('span', {class: 'subtle'}, ` — ${i.restored_by}`)
        : null]
      : h('span', {class: 'subtle'}, 'not known')],
    ['Resolved', i.resolved_at
      ? [timeEl(i.resolved_at), i.resolved_by ? h('span', {class: 'subtle'}, ` ${i.resolved_by}`)
        : null]
      : h('span', {class: 'subtle'}, 'not yet')],
    // A recovery time is only final once the incident is resolved.
    ['Recovery time', open
      ? h('span', {class: ['subtle', 'recovery']}, 'still open')
      : h('span', {class: 'recovery'}, recovery(i.recovery_seconds))],
  ], 'When');
}

function blame(i, dep) {
  const how = (i.attribution && i.attribution.how) || 'none';
  const detail = i.attribution && i.attribution.detail;
  return facts([
    ['Deployment', i.deployment
      ? [h('a', {href: `/deployments/${i.deployment}`}, `Deployment #${i.deployment}`),
        dep ? [' to ', dep.environment, ' ', badge(dep.status), ' ',
          h('span', {class: 'subtle'}, 'ended '), dep.finished_at ? timeEl(dep.finished_at)
            : 'not yet'] : null]
      : h('span', {class: 'subtle'}, 'none')],
    ['Release', i.release
      ? h('a', {href: `/releases/${i.release}`}, i.version || `release ${i.release}`)
      : h('span', {class: 'subtle'}, 'none')],
    ['Why', [HOW[how] || how, detail ? h('span', {class: 'subtle'}, ` (${detail})`) : null]],
  ], 'Blamed on');
}

function alert(i) {
  const a = i.alert;
  if (!a) {
    return h('p', {class: 'empty'}, i.source === 'alertmanager' ? 'The alert was not kept.'
      : `No alert: opened by ${SOURCES[i.source] || i.source}.`);
  }
  const labels = Object.entries(a.labels || {});
  const notes = Object.entries(a.annotations || {});
  const source = a.generator_url ? httpHref(a.generator_url) : null;
  return [
    facts([
      ['Name', (a.labels && a.labels.alertname) || '—'],
      ['Firing since', a.starts_at ? timeEl(a.starts_at) : '—'],
      ['Fingerprint', a.fingerprint ? h('code', null, a.fingerprint) : null],
      source ? ['Source', h('a', {href: source, rel: 'noopener noreferrer'},
        'The alert’s graph')] : null,
    ].filter(Boolean), 'The alert'),
    notes.length ? [h('h3', null, 'Annotations'), facts(notes, 'Annotations')] : null,
    labels.length ? [h('h3', null, 'Labels'), h('ul', {class: 'alert-labels',
      'aria-label': 'Labels'}, labels.map(([k, v]) => h('li', null, h('code', null, `${k}=${v}`))))]
      : null,
  ];
}
