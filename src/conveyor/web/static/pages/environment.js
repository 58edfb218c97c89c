// One environment of one service: what serves now and before, its health (the monitor's last
// look and the incidents open there), what waits, the deployment history, and (for people who
// may trigger) roll back, hold and unhold. Everything comes from the same API the CLI uses:
// GET /environments, GET /deployments, POST .../rollback|hold|unhold.

import {h, replace, badge, empty, errorBox, refocus, keepingFocus} from '../lib/dom.js';
import {timeEl, duration, between, shortSha, absTime, envPath} from '../lib/format.js';
import {httpHref} from '../lib/urls.js';

// The shell loads pages/environment.css with this page.
export const styled = true;

const HISTORY = 100;

// The environment's address comes from its target (a pipeline file's `url:`): only http(s)
// becomes a link; anything else is shown as text, never followed.
function address(url) {
  const href = httpHref(url);
  return href ? h('a', {href, rel: 'noopener noreferrer', id: 'env-address'}, url)
    : h('code', {id: 'env-address'}, url);
}

/** "auto", "by olga", "automatic, after a failure": who or what started a deployment. */
function triggeredBy(d) {
  const who = d.requested_by && !d.requested_by.startsWith('token:') ? d.requested_by
    : d.requested_by ? `token ${d.requested_by.slice(6)}` : null;
  switch (d.trigger) {
    case 'auto': return 'promotion (automatic)';
    case 'manual': return `promoted by ${who || 'someone'}`;
    case 'rollback': return `rollback by ${who || 'someone'}`;
    case 'failure': return 'rollback (automatic, after a failure)';
    default: return who ? `${d.trigger} by ${who}` : d.trigger;
  }
}

export async function render(root, params, ctx) {
  const {service, env} = params;
  const q = `service=${encodeURIComponent(service)}`;
  const mayAct = Boolean(ctx.me && (ctx.me.can.trigger || ctx.me.can.admin));
  let working = false;
  let last = null;
  let holdDraft = '';
  let rollbackChoice = null;

  replace(root, h('p', {class: 'loading'}, 'Loading…'));

  async function load() {
    let envs;
    let history;
    try {
      [envs, history] = await Promise.all([
        ctx.api(`/environments?${q}`),
        ctx.api(`/deployments?${q}&environment=${encodeURIComponent(env)}&limit=${HISTORY}`),
      ]);
    } catch (err) {
      replace(root, errorBox(err, `${service} ${env} could not be loaded`));
      return;
    }
    const state = envs.find((e) => e.environment === env);
    if (!state) {
      const known = envs.map((e) => e.environment);
      replace(root, h('h1', null, `${service} / ${env}`), errorBox({
        message: `service ${service} has no environment ${env}`,
        hint: known.length ? `its environments: ${known.join(', ')}` : null,
      }, 'Not found'));
      return;
    }
    const signature = JSON.stringify([state, history, working]);
    if (signature === last) return;
    last = signature;
    keepingFocus(root, () => draw(state, history), {sameOnly: true});
  }

  function draw(state, history) {
    // Releases that served here before the current one, newest first: the rollback choices.
    const seen = new Set([state.release]);
    const earlier = [];
    for (const d of history) {
      if (d.status === 'succeeded' && !seen.has(d.release)) {
        seen.add(d.release);
        earlier.push(d);
      }
    }
    const previous = earlier[0] || null;
    replace(root,
      h('div', {class: 'page-head'},
        h('h1', null, h('span', {class: 'subtle-prefix'}, service, ' / '), env),
        state.tier ? h('span', {class: 'tier'}, state.tier) : null,
        health(state),
        state.held ? badge('held', 'held') : null),
      h('div', {class: 'env-summary'},
        h('section', {class: 'card', 'aria-labelledby': 'current-title'},
          h('h2', {id: 'current-title'}, 'Serving now'),
          state.release
            ? h('div', null,
              h('p', {class: 'release-line'},
                h('a', {href: `/releases/${state.release}`, id: 'current-release'}, state.version),
                ' ', h('span', {class: 'sha', title: state.sha}, shortSha(state.sha))),
              h('p', {class: 'subtle'}, 'since ', timeEl(state.since)),
              state.url ? h('p', null, address(state.url)) : null)
            : empty('Nothing has been deployed here yet.')),
        h('section', {class: 'card', 'aria-labelledby': 'previous-title'},
          h('h2', {id: 'previous-title'}, 'Before that'),
          previous
            ? h('div', null,
              h('p', {class: 'release-line'},
                h('a', {href: `/releases/${previous.release}`, id: 'previous-release'}, previous.version),
                ' ', h('span', {class: 'sha', title: previous.sha}, shortSha(previous.sha))),
              h('p', {class: 'subtle'}, 'deployed ', timeEl(previous.finished_at || previous.created_at)))
            : empty('No earlier release has served here.')),
        healthCard(state),
        h('section', {class: 'card', 'aria-labelledby': 'hold-title'},
          h('h2', {id: 'hold-title'}, 'Promotions'),
          state.held
            ? h('p', {id: 'hold-state'}, badge('held', 'held'), ' by ', state.held_by || 'someone',
              state.hold_reason ? h('span', null, ': ', state.hold_reason) : null)
            : h('p', {id: 'hold-state'}, badge('succeeded', 'open'),
              ' new releases are deployed as they come'),
          mayAct ? holdControls(state) : null)),
      mayAct && state.release ? rollbackControls(state, earlier) : null,
      queue(state),
      h('section', {'aria-labelledby': 'history-title'},
        h('h2', {id: 'history-title'}, 'Deployment history'),
        history.length ? historyTable(history) : empty('No deployments yet.')));
  }

  function health(state) {
    // An open incident outweighs the monitor's passing look: people are dealing with a
    // failure there, so the environment is not called healthy until it is resolved.
    const incidents = state.open_incidents || [];
    const shown = incidents.length
      ? badge('open', incidents.length === 1 ? 'incident open' : `${incidents.length} incidents open`)
      : state.healthy === true ? badge('healthy', 'healthy')
        : state.healthy === false ? badge('unhealthy', 'unhealthy')
          : badge('unknown', 'health unknown');
    if (!state.checked_at) return h('span', {id: 'health-state'}, shown);
    // What the monitor saw last, and when: a badge alone cannot say how fresh it is.
    return h('span', {id: 'health-state', title: state.health_detail || ''}, shown,
      ' checked ', timeEl(state.checked_at),
      state.healthy === false && state.health_detail
        ? h('span', {class: 'health-detail'}, ': ', state.health_detail) : null);
  }

  /** The monitor (how it watches, what it saw last) and the incidents open here. */
  function healthCard(state) {
    const mon = state.monitor;
    const incidents = state.open_incidents || [];
    const look = state.healthy === true ? 'checks passing'
      : state.healthy === false ? 'checks failing' : 'not looked yet';
    return h('section', {class: 'card env-health', 'aria-labelledby': 'health-title'},
      h('h2', {id: 'health-title'}, 'Health'),
      h('p', {id: 'monitor-state'}, !mon
        ? h('span', {class: 'subtle'}, 'No release has said how to watch it.')
        : !mon.enabled ? 'Not watched: monitor.enabled is false.'
          : [`Watched every ${duration(mon.interval)}; acts after ${mon.failures} failed ` +
            `look${mon.failures === 1 ? '' : 's'} in a row.`]),
      mon && mon.enabled && state.release
        ? h('p', {id: 'monitor-look'}, badge(state.healthy === true ? 'succeeded'
          : state.healthy === false ? 'failed' : 'unknown', look),
        state.checked_at ? [' ', timeEl(state.checked_at)] : null,
        state.health_detail ? h('span', {class: 'subtle health-detail'}, ' — ', state.health_detail)
          : null)
        : null,
      incidents.length
        ? h('ul', {class: 'env-incidents', id: 'open-incidents', 'aria-label': 'Open incidents'},
          incidents.map((i) => h('li', {dataset: {incident: String(i.id)}},
            badge('open', 'open'), ' ',
            h('a', {href: `/incidents/${i.id}`}, `#${i.id} ${i.title}`),
            h('span', {class: 'subtle'}, ' since ', timeEl(i.opened_at)))))
        : h('p', {id: 'open-incidents', class: 'empty'}, 'No incident is open here.'));
  }

  function holdControls(state) {
    if (state.held) {
      return h('div', {class: 'actions'},
        h('button', {type: 'button', class: 'button', id: 'unhold', disabled: working,
          onclick: () => act('unhold', {}, `${service} ${env} is no longer held`)},
        h('span', {'aria-hidden': 'true'}, '▶'), ' Unhold'));
    }
    const input = h('input', {type: 'text', id: 'hold-reason', name: 'reason', maxlength: 2000,
      value: holdDraft, placeholder: 'e.g. freeze for the audit',
      oninput: (e) => { holdDraft = e.target.value; }});
    return h('form', {class: 'hold-form', onsubmit: (e) => {
      e.preventDefault();
      const reason = holdDraft.trim();
      act('hold', reason ? {reason} : {}, `${service} ${env} is held`).then(() => { holdDraft = ''; });
    }},
    h('div', {class: 'field'}, h('label', {for: 'hold-reason'}, 'Reason for holding'), input),
    h('button', {type: 'submit', class: 'button', id: 'hold', disabled: working},
      h('span', {'aria-hidden': 'true'}, '‖'), ' Hold'));
  }

  function rollbackControls(state, earlier) {
    if (!earlier.length) {
      return h('section', {class: 'card env-rollback', 'aria-labelledby': 'rollback-title'},
        h('h2', {id: 'rollback-title'}, 'Roll back'),
        empty('No earlier release succeeded here, so there is nothing to roll back to.'));
    }
    if (!earlier.some((d) => d.release === rollbackChoice)) rollbackChoice = earlier[0].release;
    const select = h('select', {id: 'rollback-to', name: 'to',
      onchange: (e) => { rollbackChoice = Number(e.target.value); }},
    earlier.map((d, i) => h('option', {value: String(d.release), selected: d.release === rollbackChoice},
      `${d.version}${i === 0 ? ' (the previous release)' : ''}, deployed ${
        absTime(d.finished_at || d.created_at)}`)));
    return h('section', {class: 'card env-rollback', 'aria-labelledby': 'rollback-title'},
      h('h2', {id: 'rollback-title'}, 'Roll back'),
      h('form', {class: 'rollback-form', onsubmit: async (e) => {
        e.preventDefault();
        const target = earlier.find((d) => d.release === rollbackChoice) || earlier[0];
        const ok = await ctx.confirm(
          `Roll back ${service} ${env} from ${state.version} to ${target.version}? ` +
          'It is deployed at once, skipping holds, approvals and the queue.',
          {confirmLabel: `Roll back to ${target.version}`, danger: true});
        if (!ok) return;
        await act('rollback', {to: target.release},
          `Rolling back ${service} ${env} to ${target.version}`);
      }},
      h('div', {class: 'field'}, h('label', {for: 'rollback-to'}, 'Roll back to'), select,
        h('p', {class: 'hint'}, 'Releases that succeeded here before the one serving now.')),
      h('button', {type: 'submit', class: 'button button-danger', id: 'rollback', disabled: working},
        h('span', {'aria-hidden': 'true'}, '↺'), ' Roll back…')));
  }

  async function act(what, body, done) {
    // The button pressed is disabled while it works; it has focus again when it is back.
    const pressed = document.activeElement && document.activeElement.id;
    working = true;
    last = null;
    await load();
    try {
      await ctx.api(`${envPath(service, env)}/${what}`,
        {method: 'POST', body});
      ctx.toast(done, 'success');
    } catch (err) {
      ctx.toast(`Could not ${what}: ${err.message}`, 'error');
    } finally {
      working = false;
      last = null;
      await load();
      refocus(() => (pressed ? document.getElementById(pressed) : null));
    }
  }

  await load();
  const off = ctx.live(['delivery', 'incidents'], () => { load(); });
  // Relative times ("5 min ago") and running durations age while the page stays open.
  const tick = setInterval(() => { last = null; load(); }, 60000);
  return () => {
    off();
    clearInterval(tick);
  };
}

function queue(state) {
  if (!state.queue || !state.queue.length) return null;
  return h('section', {'aria-labelledby': 'queue-title'},
    h('h2', {id: 'queue-title'}, 'Waiting here'),
    h('ul', {class: 'env-queue'}, state.queue.map((item) => h('li', null,
      badge(item.status), ' ', h('a', {href: `/releases/${item.release}`}, `release ${item.release}`),
      item.kind === 'rollback' ? ' (rollback)' : null,
      item.reason ? h('span', {class: 'subtle'}, ' — ', item.reason) : null))));
}

function historyTable(rows) {
  return h('div', {class: 'table-wrap'}, h('table', {class: 'history', id: 'history'},
    h('thead', null, h('tr', null,
      ['#', 'Release', 'Kind', 'Status', 'Triggered by', 'Started', 'Duration'].map(
        (t) => h('th', {scope: 'col', class: t === 'Duration' ? 'num' : null}, t)))),
    h('tbody', null, rows.map((d) => h('tr', {dataset: {deployment: String(d.id), kind: d.kind,
      status: d.status}},
    h('td', null, String(d.id)),
    h('td', null, h('a', {href: `/releases/${d.release}`}, d.version)),
    h('td', null, d.kind === 'rollback'
      ? h('span', {class: 'kind kind-rollback'}, h('span', {'aria-hidden': 'true'}, '↺ '), 'rollback',
        d.rollback_of ? h('span', {class: 'subtle'}, ` of #${d.rollback_of}`) : null)
      : h('span', {class: 'kind'}, 'deploy')),
    h('td', null, badge(d.status), d.reason && d.status !== 'succeeded'
      ? h('div', {class: 'subtle reason'}, d.reason) : null),
    h('td', null, triggeredBy(d)),
    h('td', null, timeEl(d.started_at || d.created_at)),
    h('td', {class: 'num'}, d.started_at
      ? duration(between(d.started_at, d.finished_at)) + (d.finished_at ? '' : ' so far')
      : '—'))))));
}
