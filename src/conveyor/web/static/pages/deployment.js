// One deployment: where it went and how (target, strategy), which release, the status it went
// through and when, its checks with their results, its approvals and incidents, what the
// target and checks reported, and the deployed app's own output. Follows delivery live.

import {h, replace, badge, errorBox} from '../lib/dom.js';
import {between, duration, envPath, shortSha, timeEl} from '../lib/format.js';
import {triggered} from './release.js';
import {checkList, facts, logBlock, numberIn, section} from './detail/detail.js';

// The shell loads pages/deployment.css with this page.
export const styled = true;

export async function render(root, params, ctx) {
  const id = numberIn(root, params.id, 'a deployment', 'Deployment');
  if (id === null) return undefined;
  let last = null;
  replace(root, h('p', {class: 'loading'}, 'Loading…'));

  async function load() {
    let data;
    try {
      data = await ctx.api(`/deployments/${id}`);
    } catch (err) {
      last = null;
      replace(root, h('h1', null, `Deployment ${id}`),
        errorBox(err, 'This deployment could not be loaded'));
      return;
    }
    const signature = JSON.stringify(data);
    if (signature === last) return;
    last = signature;
    // Keep open <details> (observed values) open across a live refresh.
    const open = new Set([...root.querySelectorAll('details[open][id]')].map((d) => d.id));
    replace(root, page(data));
    for (const name of open) {
      const el = document.getElementById(name);
      if (el) el.open = true;
    }
  }

  await load();
  return ctx.live(['delivery', 'incidents'], () => { load(); });
}

function page(d) {
  const rollback = d.kind === 'rollback';
  return h('article', {class: ['detail-page', 'deployment-page'], 'aria-labelledby': 'dep-title'},
    h('div', {class: 'page-head'},
      h('h1', {id: 'dep-title'}, h('span', {class: 'subtle-prefix'}, `${d.service} `),
        `${rollback ? 'Rollback' : 'Deployment'} #${d.id} to ${d.environment}`),
      badge(d.status)),
    d.reason ? h('p', {class: 'deployment-reason'}, h('strong', null, 'Why: '), d.reason) : null,
    section('dep-what', 'What and where', about(d)),
    section('dep-history', 'Status', history(d)),
    section('dep-checks', 'Checks', d.checks.length ? checkList(d.checks, d.id)
      : h('p', {class: 'empty'}, checksPending(d))),
    d.approvals.length ? section('dep-approvals', 'Approvals', approvals(d)) : null,
    d.incidents.length ? section('dep-incidents', 'Incidents', h('ul', {class: 'detail-list'},
      d.incidents.map((n) => h('li', null, h('a', {href: `/incidents/${n}`}, `Incident #${n}`),
        ' was attributed to this deployment')))) : null,
    section('dep-log', 'Deployment log', h('p', {class: 'subtle'},
      'What the target and the checks reported, in order.'),
    logBlock(d.log, 'Deployment log', 'Nothing reported yet.')),
    section('dep-output', 'The app’s output', h('p', {class: 'subtle'},
      'The last lines the deployed app wrote (its standard output and errors).'),
    logBlock(d.output, 'The app’s output', d.target && d.target.kind !== 'process'
      ? `The ${d.target.kind} target keeps the app’s output where it runs, not on this server.`
      : 'The app has written nothing yet, or its output is no longer kept.')),
    h('p', null, h('a', {href: `/deployments?service=${encodeURIComponent(d.service)}` +
      `&environment=${encodeURIComponent(d.environment)}`},
    `All deployments of ${d.service} to ${d.environment}`)));
}

function about(d) {
  const took = d.started_at ? between(d.started_at, d.finished_at) : null;
  return facts([
    ['Service', d.service],
    ['Environment', [h('a', {href: envPath(d.service, d.environment)}, d.environment),
      d.tier ? h('span', {class: 'subtle'}, ` (${d.tier})`) : null]],
    ['Release', [h('a', {href: `/releases/${d.release}`}, d.version), ' ',
      h('code', {class: 'sha', title: d.sha}, shortSha(d.sha)),
      d.subject ? ` ${d.subject}` : null,
      d.author ? h('span', {class: 'subtle'}, ` — ${d.author}`) : null]],
    ['Target', d.target ? `${d.target.kind}, ${d.target.strategy}`
      : h('span', {class: 'subtle'}, 'not in this release’s pipeline file')],
    ['Triggered', triggered(d)],
    ['Replaced', d.previous_release
      ? h('a', {href: `/releases/${d.previous_release}/compare/${d.release}`},
        `release ${d.previous_release} (compare)`)
      : h('span', {class: 'subtle'}, 'nothing: the first release there')],
    d.rollback_of ? ['Undoes', h('a', {href: `/deployments/${d.rollback_of}`},
      `deployment #${d.rollback_of}`)] : null,
    ['Address', d.url ? h('code', null, d.url) : h('span', {class: 'subtle'}, 'none')],
    ['Queued', timeEl(d.created_at)],
    ['Started', d.started_at ? timeEl(d.started_at) : 'not yet'],
    d.healthy_at ? ['Healthy', timeEl(d.healthy_at)] : null,
    d.failed_at ? ['Failed', timeEl(d.failed_at)] : null,
    ['Ended', d.finished_at ? timeEl(d.finished_at) : 'not yet'],
    ['Duration', took === null ? '—' : d.finished_at ? duration(took) : `${duration(took)} so far`],
  ].filter(Boolean), 'The deployment');
}

function history(d) {
  if (!d.history.length) return h('p', {class: 'empty'}, 'No status recorded yet.');
  return h('ol', {class: 'status-history', 'aria-label': 'Status history'},
    d.history.map((s) => h('li', {dataset: {status: s.status}},
      badge(s.status), timeEl(s.at),
      s.actor ? h('span', {class: 'subtle'}, `by ${s.actor}`) : null,
      s.reason ? h('span', {class: 'why'}, s.reason) : null)));
}

function checksPending(d) {
  if (['queued', 'awaiting_approval', 'deploying'].includes(d.status)) {
    return 'The checks run once the target has put the release in place.';
  }
  return 'No checks ran.';
}

function approvals(d) {
  return h('ul', {class: 'detail-list'}, d.approvals.map((a) => h('li', null,
    badge(a.status), ' ', a.kind === 'inconclusive' ? 'Inconclusive checks' : 'Approval',
    ` #${a.id}: ${a.approved} of ${a.required} approved`,
    a.decisions.map((x) => h('div', {class: 'subtle'}, `${x.user} ${x.decision === 'approve' ? 'approved' : 'rejected'} `,
      timeEl(x.at), x.reason ? `: “${x.reason}”` : '')),
    a.status === 'pending' ? [' ', h('a', {href: '/approvals'}, 'Decide in Approvals')] : null)));
}
