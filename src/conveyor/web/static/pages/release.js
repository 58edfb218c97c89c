// The release record as a vertical timeline, read from GET /api/v1/releases/{id}/timeline:
// the commit, the run that built and tested it, its artifacts, every deployment with its
// checks, approvals, rollbacks and incidents. It follows delivery and incident changes live.

import {h, replace, badge, empty, errorBox} from '../lib/dom.js';
import {timeEl, duration, between, shortSha, envPath} from '../lib/format.js';
import {httpHref} from '../lib/urls.js';
import {comparePath} from './compare.js';

// The shell loads pages/release.css with this page.
export const styled = true;

// Icon and label per entry kind: the icon is decoration, the label says it in words.
const KINDS = {
  commit: ['◆', 'Commit'],
  run: ['⚙', 'Build and tests'],
  release: ['▣', 'Release'],
  deployment: ['⇪', 'Deployment'],
  rollback: ['↺', 'Rollback'],
  approval: ['⚑', 'Approval'],
  incident: ['⚠', 'Incident'],
};
const OUTCOMES = {
  pass: ['succeeded', 'pass'],
  fail: ['failed', 'fail'],
  inconclusive: ['held', 'inconclusive'],
};
const FORGES = {github: 'GitHub', gitlab: 'GitLab', gitea: 'Gitea'};

function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export async function render(root, params, ctx) {
  const id = Number.parseInt(params.id, 10);
  if (!Number.isFinite(id) || String(id) !== params.id || id < 1) {
    replace(root, h('h1', null, 'Release'), errorBox({message: `"${params.id}" is not a release number`}));
    return undefined;
  }
  let last = null;
  // The service's release before this one, to compare with (null: none); read once.
  let previous;
  replace(root, h('p', {class: 'loading'}, 'Loading…'));

  async function load() {
    let data;
    try {
      data = await ctx.api(`/releases/${id}/timeline`);
      if (previous === undefined) {
        const query = new URLSearchParams({service: data.release.service, before: id, limit: 1});
        previous = (await ctx.api(`/releases?${query}`).catch(() => []))[0] || null;
      }
    } catch (err) {
      replace(root, h('h1', null, `Release ${id}`), errorBox(err, 'This release could not be loaded'));
      last = null;
      return;
    }
    const signature = JSON.stringify(data);
    if (signature === last) return;
    last = signature;
    // Keep open <details> open across a live refresh.
    const open = new Set([...root.querySelectorAll('details[open][id]')].map((d) => d.id));
    draw(data);
    for (const name of open) {
      const el = document.getElementById(name);
      if (el) el.open = true;
    }
  }

  function draw(data) {
    const r = data.release;
    replace(root,
      h('div', {class: 'page-head'},
        h('h1', null, h('span', {class: 'subtle-prefix'}, r.service, ' '), `release ${r.version}`),
        h('p', {class: 'subtle'}, r.subject || '', r.author ? ` — ${r.author}` : ''),
        h('p', {class: 'serving'}, r.environments.length
          ? ['Serving in ', r.environments.map((e, i) => [i ? ', ' : '',
            h('a', {href: envPath(r.service, e)}, e)])]
          : 'Not serving in any environment now'),
        previous ? h('p', {class: 'compare-link'}, h('a', {href: comparePath(previous.id, id)},
          `Compare with the previous release, #${previous.id}`)) : null),
      data.entries.length
        ? h('ol', {class: 'rel-timeline', 'aria-label': `What happened to release ${r.version}`},
          data.entries.map((e, i) => entry(r, e, i)))
        : empty('Nothing recorded yet.'));
  }

  await load();
  const off = ctx.live(['delivery', 'incidents'], () => { load(); });
  return off;
}

function entry(release, e, index) {
  const [icon, label] = KINDS[e.kind] || ['•', e.kind];
  const body = BODIES[e.kind] ? BODIES[e.kind](release, e, index) : null;
  const tone = toneOf(e);
  return h('li', {class: ['tl-entry', `tl-${e.kind}`, `tl-tone-${tone}`], dataset: {kind: e.kind}},
    h('span', {class: 'tl-marker', 'aria-hidden': 'true'}, icon),
    h('div', {class: 'tl-body'},
      h('div', {class: 'tl-head'},
        h('span', {class: 'tl-kind'}, label),
        ' ', timeEl(e.at)),
      body));
}

function toneOf(e) {
  if (e.kind === 'commit' || e.kind === 'release') return 'neutral';
  const s = String(e.status || '');
  if (['succeeded', 'approved', 'resolved'].includes(s)) return 'ok';
  if (['failed', 'rejected', 'open', 'rolled_back'].includes(s)) return 'bad';
  if (e.kind === 'rollback') return 'warn';
  return 'wait';
}

const BODIES = {
  commit(release, e) {
    const links = e.links;
    const rest = (e.message || '').split('\n').slice(1).join('\n').trim();
    return [
      h('h2', {class: 'tl-title'}, h('span', {class: 'sha', title: e.sha}, shortSha(e.sha)), ' ',
        e.subject || '(no message)'),
      rest ? h('details', {id: 'commit-message'}, h('summary', null, 'Full message'),
        h('pre', {class: 'message'}, rest)) : null,
      h('dl', {class: 'facts'},
        h('dt', null, 'Author'), h('dd', null, e.author || '—',
          e.author_email ? h('span', {class: 'subtle'}, ` <${e.author_email}>`) : null,
          e.authored_at ? [' · ', timeEl(e.authored_at)] : null),
        h('dt', null, 'Committer'), h('dd', null, e.committer || '—',
          e.committer_email ? h('span', {class: 'subtle'}, ` <${e.committer_email}>`) : null,
          e.committed_at ? [' · ', timeEl(e.committed_at)] : null),
        e.pusher ? [h('dt', null, 'Pushed by'), h('dd', null, e.pusher,
          e.pusher_via ? h('span', {class: 'subtle'}, ` (${e.pusher_via})`) : null)] : null,
        e.ref ? [h('dt', null, 'Ref'), h('dd', null, h('code', null, e.ref))] : null),
      links ? h('p', {class: 'actions'},
        h('a', {href: httpHref(links.commit), rel: 'noopener noreferrer', class: 'button'},
          `View the diff on ${FORGES[links.forge] || links.forge}`),
        links.compare ? h('a', {href: httpHref(links.compare), rel: 'noopener noreferrer', class: 'button'},
          'Changes since the previous release') : null)
        : h('p', {class: 'subtle'}, 'No forge is known for this repository, so there is no diff link.'),
    ];
  },

  run(release, e) {
    return [
      h('h2', {class: 'tl-title'}, h('a', {href: `/runs/${e.run}`}, `Run #${e.run}`), ' ',
        badge(e.status), ' ', h('span', {class: 'subtle'}, duration(e.duration))),
      e.reason && e.status !== 'succeeded' ? h('p', {class: 'subtle'}, e.reason) : null,
      e.jobs.length ? h('ul', {class: 'jobs'}, e.jobs.map((j) => h('li', null,
        badge(j.status), ' ', h('span', {class: 'job-name'}, j.name), ' ',
        h('span', {class: 'subtle'}, duration(j.duration))))) : null,
    ];
  },

  release(release, e) {
    const p = e.publication;
    return [
      h('h2', {class: 'tl-title'}, `${e.version} created`),
      e.artifacts.length
        ? h('div', {class: 'table-wrap'}, h('table', {class: 'artifacts'},
          h('caption', null, 'Artifacts'),
          h('thead', null, h('tr', null, ['Path', 'Job', 'Digest', 'Size'].map(
            (t) => h('th', {scope: 'col', class: t === 'Size' ? 'num' : null}, t)))),
          h('tbody', null, e.artifacts.map((a) => h('tr', null,
            h('td', null, h('a', {href: `/api/v1/artifacts/${encodeURIComponent(a.digest)}`,
              download: a.path.split('/').pop()}, a.path)),
            h('td', null, a.job || '—'),
            h('td', null, h('code', {class: 'digest'}, a.digest)),
            h('td', {class: 'num'}, bytes(a.size)))))))
        : h('p', {class: 'subtle'}, 'No artifacts.'),
      p.status === 'none' ? null : h('div', {class: 'publication'},
        h('h3', null, 'Published image ', badge(p.status === 'published' ? 'succeeded'
          : p.status === 'failed' ? 'failed' : 'pending', p.status)),
        p.reference ? h('p', null, h('code', null, p.reference)) : null,
        p.digest ? h('p', null, 'Digest ', h('code', {class: 'digest'}, p.digest)) : null,
        p.images.length ? h('ul', null, p.images.map((img) => h('li', null,
          h('code', null, typeof img === 'string' ? img : JSON.stringify(img))))) : null,
        p.error ? h('p', {class: 'form-error'}, p.error) : null),
    ];
  },

  deployment(release, e) {
    return deploymentBody(release, e,
      [`Deployed to `, h('a', {href: envPath(release.service, e.environment)}, e.environment)]);
  },

  rollback(release, e) {
    const restored = e.release === release.id
      ? 'this release'
      : h('a', {href: `/releases/${e.release}`}, e.version);
    return [
      ...deploymentBody(release, e, [
        e.automatic ? 'Automatic rollback of ' : 'Rollback of ',
        h('a', {href: envPath(release.service, e.environment)}, e.environment), ' to ', restored]),
      h('p', {class: 'why'}, h('strong', null, 'Why: '), e.why),
    ];
  },

  approval(release, e) {
    const decisions = e.decisions || [];
    return [
      h('h2', {class: 'tl-title'},
        e.approval_kind === 'inconclusive' ? 'Checks were inconclusive in ' : 'Approval for ',
        h('a', {href: envPath(release.service, e.environment)}, e.environment), ' ', badge(e.status)),
      h('p', null, `Needs ${e.required} of ${(e.approvers || []).join(', ') || 'nobody'}`,
        `; ${e.approved} approved.`,
        e.status === 'pending' ? [' ', h('a', {href: '/approvals'}, 'Open the approvals inbox')] : null),
      decisions.length ? h('ul', {class: 'decisions'}, decisions.map((d) => h('li', null,
        badge(d.decision === 'approve' ? 'approved' : 'rejected'), ' ',
        h('strong', null, d.user), ' ', timeEl(d.at),
        d.via && d.via !== 'api' ? h('span', {class: 'subtle'}, ` via ${d.via}`) : null,
        d.reason ? h('span', null, ': “', d.reason, '”') : null)))
        : null,
      e.reason && e.status !== 'pending' ? h('p', {class: 'subtle'}, e.reason) : null,
    ];
  },

  incident(release, e) {
    return [
      h('h2', {class: 'tl-title'},
        h('a', {href: `/incidents/${e.incident}`}, `Incident #${e.incident}`), ' ',
        badge(e.status)),
      h('p', null, e.title),
      h('dl', {class: 'facts'},
        h('dt', null, 'Opened'), h('dd', null, timeEl(e.opened_at),
          e.source ? h('span', {class: 'subtle'}, ` by ${e.source}`) : null),
        h('dt', null, 'Restored'), h('dd', null, e.restored_at ? timeEl(e.restored_at) : 'not yet',
          e.restored_by ? h('span', {class: 'subtle'}, ` — ${e.restored_by}`) : null),
        h('dt', null, 'Resolved'), h('dd', null, e.resolved_at ? timeEl(e.resolved_at) : 'not yet',
          e.resolved_by ? h('span', {class: 'subtle'}, ` — ${e.resolved_by}`) : null),
        h('dt', null, 'Recovery time'), h('dd', {class: 'recovery'},
          e.recovery_seconds !== null && e.recovery_seconds !== undefined
            ? duration(e.recovery_seconds) : 'not recovered yet')),
    ];
  },
};

function deploymentBody(release, e, title) {
  const running = !e.finished_at && e.started_at;
  return [
    h('h2', {class: 'tl-title'}, ...title, ' ', badge(e.status),
      h('span', {class: 'subtle'}, ` deployment #${e.deployment}`)),
    h('dl', {class: 'facts'},
      h('dt', null, 'Triggered'), h('dd', null, triggered(e)),
      h('dt', null, 'Started'), h('dd', null, timeEl(e.started_at)),
      h('dt', null, 'Ended'), h('dd', null, e.finished_at ? timeEl(e.finished_at) : 'not yet'),
      h('dt', null, 'Duration'), h('dd', null,
        running ? `${duration(between(e.started_at, null))} so far` : duration(e.duration)),
      e.url ? [h('dt', null, 'Address'), h('dd', null, h('code', null, e.url))] : null),
    e.reason && e.status !== 'succeeded' ? h('p', {class: 'reason'}, e.reason) : null,
    e.checks.length ? h('ul', {class: 'checks', 'aria-label': 'Checks'},
      e.checks.map((c, i) => check(c, `check-${e.deployment}-${i}`))) : null,
  ];
}

export function triggered(e) {
  switch (e.trigger) {
    case 'auto': return 'automatically, by promotion';
    case 'manual': return `by hand, by ${e.requested_by || 'someone'}`;
    case 'rollback': return `rollback by ${e.requested_by || 'someone'}`;
    case 'failure': return 'automatically, after a failure';
    default: return `${e.trigger}${e.requested_by ? ` by ${e.requested_by}` : ''}`;
  }
}

export function check(c, id) {
  const [state, label] = OUTCOMES[c.outcome] || ['unknown', c.outcome || 'unknown'];
  const observed = Object.entries(c.data || {}).filter(([, v]) => v !== null && v !== '' &&
    !(Array.isArray(v) && !v.length));
  return h('li', {class: 'check', dataset: {outcome: c.outcome}},
    badge(state, label), ' ', h('span', {class: 'check-kind'}, c.kind), ' ',
    h('span', null, c.detail),
    c.duration ? h('span', {class: 'subtle'}, ` (${duration(c.duration)})`) : null,
    observed.length ? h('details', {id}, h('summary', null, 'Observed values'),
      h('dl', {class: 'observed'}, observed.map(([k, v]) => [h('dt', null, k),
        h('dd', null, h('code', null, typeof v === 'string' ? v : JSON.stringify(v)))]))) : null);
}
