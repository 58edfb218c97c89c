// The inbox: notices that a service's `notify: [{inbox: {}}]` keeps on the server (approval
// requested, deployed, failed, rolled back, incidents), newest first, each linking to where a
// person acts on it. "New" marks notices this browser has not shown before (kept in
// localStorage: the inbox itself is shared by everyone and has no per-person state).

import {h, replace, badge, empty, errorBox, loadAndFollow} from '../lib/dom.js';
import {timeEl, shortSha} from '../lib/format.js';

// The shell loads pages/inbox.css with this page.
export const styled = true;

const LIMIT = 200;
const LIVE_DEBOUNCE_MS = 300;
const SEEN_KEY = 'conveyor.inbox.seen';
const TONES = {
  'approval.requested': 'awaiting_approval',
  'deployment.started': 'deploying',
  'deployment.succeeded': 'succeeded',
  'deployment.failed': 'failed',
  'deployment.rolledback': 'rolled_back',
  'incident.opened': 'open',
  'incident.resolved': 'resolved',
  'run.failed': 'failed',
  'run.succeeded': 'succeeded',
};

function seenUpTo() {
  try {
    return Number(localStorage.getItem(SEEN_KEY)) || 0;
  } catch {
    return 0;
  }
}

function markSeen(id) {
  try {
    if (id > seenUpTo()) localStorage.setItem(SEEN_KEY, String(id));
  } catch {
    // private windows may refuse storage: every notice then just stays "new"
  }
}

/** Where a person acts on the notice: the approval, the incident, the environment. */
function links(n) {
  const out = [];
  if (n.approval_id) {
    out.push(h('a', {href: '/approvals'}, `approval #${n.approval_id}`));
  }
  if (n.incident_id) {
    out.push(h('a', {href: `/incidents/${n.incident_id}`},
      `incident #${n.incident_id}`));
  }
  if (n.environment) {
    out.push(h('a', {href: `/services/${encodeURIComponent(n.service)}/environments/` +
      encodeURIComponent(n.environment)}, `${n.service} ${n.environment}`));
  }
  return out.flatMap((link, i) => (i ? [' · ', link] : [link]));
}

function item(n, seen) {
  const fresh = n.id > seen;
  const facts = Object.entries(n.fields || {});
  return h('li', {class: ['notice', fresh ? 'is-new' : null], id: `notice-${n.id}`,
    dataset: {id: String(n.id), event: n.event}},
  h('div', {class: 'notice-head'},
    badge(TONES[n.event] || 'unknown', n.title),
    fresh ? h('span', {class: 'notice-new'}, 'new') : null,
    h('span', {class: 'notice-when subtle'}, timeEl(n.at))),
  h('p', {class: 'notice-summary'}, n.summary || n.title),
  h('p', {class: 'notice-meta subtle'},
    n.service, n.environment ? ` · ${n.environment}` : '',
    n.release ? ` · ${n.release}` : '',
    n.sha ? h('span', {class: 'mono'}, ` · ${shortSha(n.sha)}`) : ''),
  facts.length ? h('dl', {class: 'notice-fields'},
    facts.map(([k, v]) => [h('dt', null, k), h('dd', null, v)])) : null,
  h('p', {class: 'notice-links'}, links(n)));
}

export async function render(root, params, ctx) {
  const service = params.query.get('service') || '';
  const seen = seenUpTo();
  let last = null;
  let seq = 0;
  const list = h('div', {id: 'inbox-list', 'aria-live': 'polite'});
  replace(root, h('section', {class: 'inbox', 'aria-labelledby': 'inbox-title'},
    h('div', {class: 'page-head'}, h('h1', {id: 'inbox-title'}, 'Inbox'),
      h('p', {class: 'subtle'}, 'What happened to your services, as the ', h('code', null,
        'notify: [{inbox: {}}]'), ' entries of their conveyor.yml ask. Newest first.')),
    list));

  async function load() {
    const mine = ++seq;
    const query = new URLSearchParams({limit: String(LIMIT)});
    if (service) query.set('service', service);
    let notices;
    try {
      notices = await ctx.api(`/inbox?${query}`);
    } catch (err) {
      if (mine === seq) replace(list, errorBox(err, 'The inbox could not be loaded'));
      return;
    }
    if (mine !== seq) return;
    const signature = JSON.stringify(notices);
    if (signature === last) return;
    last = signature;
    replace(list, notices.length
      ? h('ul', {class: 'notice-list'}, notices.map((n) => item(n, seen)))
      : empty('No notices yet. Add `- inbox: {}` under notify: in a conveyor.yml.'));
    if (notices.length) markSeen(notices[0].id);
  }

  return loadAndFollow(ctx, ['delivery', 'incidents'], load, LIVE_DEBOUNCE_MS, () => {
    seq += 1;
  });
}
