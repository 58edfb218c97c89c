// Overview: for every service, its environments in pipeline order (what runs, since when,
// health, holds, what waits, approvals, incidents) and its latest runs. Updates live.

import {h, replace, badge, empty, errorBox} from '../lib/dom.js';
import {timeEl, duration, shortSha, envPath} from '../lib/format.js';

// The shell loads pages/overview.css with this page.
export const styled = true;

function releaseLink(release) {
  if (!release) return h('span', {class: 'empty'}, 'nothing deployed');
  return h('div', {class: 'ov-release'},
    h('a', {href: `/releases/${release.id}`, class: 'ov-release-link'},
      `Release ${release.id}`),
    ' ', h('code', {class: 'sha', title: release.sha}, shortSha(release.sha)),
    release.message ? h('div', {class: 'ov-message', title: release.message}, release.message) : null);
}

function healthBadge(health, openIncidents) {
  // An open incident outweighs a passing look: the tile never says "healthy" beside it.
  if (openIncidents) {
    return badge('open', openIncidents === 1 ? 'incident open' : `${openIncidents} incidents open`);
  }
  const shown = health.state === 'healthy' ? badge('healthy')
    : health.state === 'unhealthy' ? badge('unhealthy') : badge('unknown', 'health unknown');
  if (!health.checked_at) return shown;
  // When the monitor last looked: a stale "healthy" must be visible as stale.
  return h('span', {class: 'ov-health', title: health.detail || ''}, shown,
    ' checked ', timeEl(health.checked_at));
}

function countLink(href, n, one, many) {
  if (!n) return null;
  return h('a', {href, class: 'ov-count'}, `${n} ${n === 1 ? one : many}`);
}

function environmentTile(service, env) {
  const path = envPath(service, env.environment);
  const last = env.health.last_deployment;
  const facts = [];
  if (env.in_progress) {
    const p = env.in_progress;
    facts.push(h('li', null, badge(p.status), ' ',
      p.kind === 'rollback' ? 'rolling back to ' : 'deploying ',
      h('a', {href: `/releases/${p.release}`}, `release ${p.release}`)));
  } else if (last && ['failed', 'rolled_back', 'cancelled', 'rejected'].includes(last.status)) {
    facts.push(h('li', null, 'last deployment ', badge(last.status), ' ',
      h('a', {href: `/releases/${last.release}`}, `release ${last.release}`)));
  }
  // Each waiting deployment says why it waits (queued, awaiting approval, held).
  const shown = env.queued.deployments.slice(0, 3);
  for (const d of shown) {
    facts.push(h('li', {class: 'ov-waiting'}, badge(d.status), ' ',
      h('a', {href: `/releases/${d.release}`}, `release ${d.release}`)));
  }
  if (env.queued.count > shown.length) {
    facts.push(h('li', null, h('a', {href: path}, `${env.queued.count - shown.length} more waiting`)));
  }
  const approvals = countLink('/approvals', env.pending_approvals, 'approval pending', 'approvals pending');
  if (approvals) facts.push(h('li', null, h('span', {'aria-hidden': 'true'}, '⚑ '), approvals));
  const incidents = countLink('/incidents', env.open_incidents, 'open incident', 'open incidents');
  if (incidents) facts.push(h('li', {class: 'ov-incidents'}, badge('open', 'incident'), ' ', incidents));

  const tone = env.release && env.health.state !== 'unknown' ? `ov-${env.health.state}` : null;
  return h('article', {class: ['ov-env', tone, env.held && 'ov-held', env.open_incidents && 'ov-incident'],
    dataset: {service, env: env.environment}, 'aria-labelledby': `env-${service}-${env.environment}`},
    h('header', {class: 'ov-env-head'},
      h('h3', {id: `env-${service}-${env.environment}`},
        h('a', {href: path}, env.environment)),
      env.tier ? h('span', {class: 'tier'}, env.tier) : null),
    releaseLink(env.release),
    h('div', {class: 'ov-state'},
      env.release ? healthBadge(env.health, env.open_incidents) : null,
      env.held ? badge('held', 'held') : null,
      env.since ? h('span', {class: 'subtle'}, 'since ', timeEl(env.since)) : null),
    env.held && env.hold_reason ? h('p', {class: 'hint'},
      `Held${env.held_by ? ' by ' + env.held_by : ''}: ${env.hold_reason}`) : null,
    facts.length ? h('ul', {class: 'ov-facts'}, facts) : null);
}

function runsTable(service, runs) {
  if (!runs.length) return empty('No runs yet.');
  return h('div', {class: 'table-wrap'}, h('table', {class: 'ov-runs'},
    h('caption', null, `Latest runs of ${service}`),
    h('thead', null, h('tr', null,
      h('th', {scope: 'col'}, 'Run'), h('th', {scope: 'col'}, 'Status'),
      h('th', {scope: 'col'}, 'Commit'), h('th', {scope: 'col'}, 'Started'),
      h('th', {scope: 'col', class: 'num'}, 'Duration'))),
    h('tbody', null, runs.map((run) => h('tr', {dataset: {run: run.id}},
      h('td', null, h('a', {href: `/runs/${run.id}`}, `#${run.id}`)),
      h('td', null, badge(run.status)),
      h('td', null, h('code', {class: 'sha', title: run.sha}, shortSha(run.sha)), ' ',
        h('span', {class: 'ov-message-inline'}, run.message || '')),
      h('td', null, timeEl(run.started_at || run.created_at)),
      h('td', {class: 'num'}, run.duration === null ? '—' : duration(run.duration)))))),
    h('p', {class: 'ov-all-runs'}, h('a', {href: `/runs?service=${encodeURIComponent(service)}`},
      `All runs of ${service} →`)));
}

function serviceSection(service, ctx, onTrigger) {
  const actions = [];
  if (ctx.me && ctx.me.can.trigger) {
    actions.push(h('button', {type: 'button', class: 'button', onclick: (e) => onTrigger(service.name, e.currentTarget)},
      h('span', {'aria-hidden': 'true'}, '▶'), ` Run ${service.name}`));
  }
  const envs = service.environments;
  return h('section', {class: 'card ov-service', dataset: {service: service.name},
    'aria-labelledby': `svc-${service.name}`},
    h('div', {class: 'page-head'},
      h('h2', {id: `svc-${service.name}`}, service.name),
      actions.length ? h('div', {class: 'actions'}, actions) : null),
    envs.length
      ? h('div', {class: 'ov-envs'}, envs.map((env, i) => [
        i ? h('span', {class: 'ov-arrow', 'aria-hidden': 'true'}, '→') : null,
        environmentTile(service.name, env)]))
      : empty('No environments yet: they appear with the first release whose conveyor.yml names some.'),
    h('h3', {class: 'ov-runs-title'}, 'Latest runs'),
    runsTable(service.name, service.runs));
}

export async function render(root, params, ctx) {
  const summary = h('p', {class: 'subtle', id: 'ov-summary'});
  const body = h('div', {id: 'ov-body'}, h('p', {class: 'loading'}, 'Loading…'));
  replace(root,
    h('div', {class: 'page-head'}, h('h1', null, 'Overview'), summary),
    body);

  let stopped = false;
  let loading = null;
  let again = false;

  async function trigger(service, button) {
    button.disabled = true;
    try {
      const run = await ctx.api('/runs', {method: 'POST', body: {service, rev: 'HEAD'}});
      ctx.toast(`Run #${run.id} of ${service} queued.`, 'success');
      load();
    } catch (err) {
      ctx.toast(`Could not start a run of ${service}: ${err.message}`, 'error');
    } finally {
      button.disabled = false;
    }
  }

  async function load() {
    // One load at a time; a change during a load asks for one more afterwards.
    if (loading) {
      again = true;
      return loading;
    }
    loading = (async () => {
      try {
        const data = await ctx.api('/overview');
        if (stopped) return;
        replace(summary,
          `${data.services.length} service${data.services.length === 1 ? '' : 's'} · `,
          h('a', {href: '/approvals'}, `${data.pending_approvals} pending approval${data.pending_approvals === 1 ? '' : 's'}`),
          ' · ',
          h('a', {href: '/incidents'}, `${data.open_incidents} open incident${data.open_incidents === 1 ? '' : 's'}`));
        if (!data.services.length) {
          replace(body, empty('No services yet. Add one with `conveyor service add NAME --repo PATH`.'));
        } else {
          replace(body, data.services.map((s) => serviceSection(s, ctx, trigger)));
        }
        body.dataset.loaded = String(Date.now());
      } catch (err) {
        if (!stopped) replace(body, errorBox(err));
      }
    })();
    try {
      await loading;
    } finally {
      loading = null;
    }
    if (again && !stopped) {
      again = false;
      await load();
    }
  }

  await load();
  const unsubscribe = ctx.live(['delivery', 'dispatch', 'incidents'], () => load());
  // Relative times ("5 min ago") and running durations age even when nothing changes.
  const timer = setInterval(() => { if (!document.hidden) load(); }, 30000);
  return () => {
    stopped = true;
    unsubscribe();
    clearInterval(timer);
  };
}
