// Approvals inbox: deployments waiting for a person, with Approve and Reject. Whether the
// signed-in person may decide each one comes from the server (GET /api/v1/approvals → `you`),
// which applies the same rules as when they press the button; the page only shows them.

import {h, replace, badge, empty, errorBox, refocus, keepingFocus} from '../lib/dom.js';
import {timeEl, shortSha, firstLine, envPath} from '../lib/format.js';

// The shell loads pages/approvals.css with this page.
export const styled = true;

const RECENT = 10;

export async function render(root, params, ctx) {
  // Read-only viewers get no action buttons; anyone else sees them, disabled with the reason
  // when they may not decide.
  const acts = Boolean(ctx.me && (ctx.me.can.approve || ctx.me.can.trigger || ctx.me.can.admin));
  // Reasons being typed survive a live refresh of the list.
  const drafts = new Map();
  const busy = new Set();
  let last = null;
  let loading = null;

  const pendingBox = h('div', {id: 'approvals-pending'});
  const recentBox = h('div', {id: 'approvals-recent'});
  replace(root,
    h('div', {class: 'page-head'},
      h('h1', null, 'Approvals'),
      h('p', {class: 'subtle'}, 'Deployments waiting for a person’s decision.')),
    h('section', {'aria-labelledby': 'pending-title'},
      h('h2', {id: 'pending-title', tabindex: '-1'}, 'Waiting for a decision'), pendingBox),
    h('section', {'aria-labelledby': 'recent-title'},
      h('h2', {id: 'recent-title'}, 'Recently decided'), recentBox));

  async function load() {
    let pending;
    let all;
    try {
      // Pending ones on their own: the full list is only the latest hundred.
      [pending, all] = await Promise.all([ctx.api('/approvals'), ctx.api('/approvals?all=true')]);
    } catch (err) {
      replace(pendingBox, errorBox(err, 'Approvals could not be loaded'));
      return;
    }
    const signature = JSON.stringify([pending, all, [...busy]]);
    if (signature === last) return;
    last = signature;
    // A reason being typed keeps its focus and caret across a live refresh.
    keepingFocus(root, () => {
      replace(pendingBox, pending.length
        ? h('ul', {class: 'approval-list'}, pending.map((a) => h('li', null, card(a))))
        : empty('Nothing waits for approval.'));
      const decided = all.filter((a) => a.status !== 'pending').slice(0, RECENT);
      replace(recentBox, decided.length ? recentTable(decided) : empty('No decisions yet.'));
    }, {sameOnly: true});
  }

  function reload() {
    // One load at a time; a change announced meanwhile is picked up by one more.
    if (loading) {
      loading.again = true;
      return loading.promise;
    }
    const state = {again: false};
    state.promise = (async () => {
      do {
        state.again = false;
        await load();
      } while (state.again);
      loading = null;
    })();
    loading = state;
    return state.promise;
  }

  function card(a) {
    const titleId = `approval-${a.id}-title`;
    const commit = a.commit || {};
    const approvedBy = (a.decisions || []).filter((d) => d.decision === 'approve').map((d) => d.user);
    return h('article', {class: 'card approval', id: `approval-${a.id}`, 'aria-labelledby': titleId,
      tabindex: '-1', dataset: {approval: String(a.id)}},
    h('h3', {id: titleId},
      h('span', {class: 'svc'}, a.service), ' → ',
      h('a', {href: envPath(a.service, a.environment)}, a.environment),
      ' ', badge(a.kind === 'inconclusive' ? 'held' : 'awaiting_approval',
        a.kind === 'inconclusive' ? 'checks inconclusive' : 'awaiting approval')),
    h('dl', {class: 'facts'},
      h('dt', null, 'Release'),
      h('dd', null, h('a', {href: `/releases/${a.release}`}, a.version), ' ',
        h('span', {class: 'sha', title: commit.sha || ''}, shortSha(commit.sha))),
      h('dt', null, 'Change'),
      h('dd', null, h('span', {class: 'subject'}, firstLine(commit.subject) || '—'),
        commit.author ? h('span', {class: 'subtle'}, ' by ', commit.author) : null),
      h('dt', null, 'Requested'),
      h('dd', null, timeEl(a.requested_at),
        a.deadline ? h('span', {class: 'subtle'}, ' · times out ', timeEl(a.deadline),
          ` (then ${a.on_timeout === 'approve' ? 'approved' : 'rejected'})`) : null),
      h('dt', null, 'Rule'),
      h('dd', null, a.rule || `${a.required} of ${(a.approvers || []).join(', ')}`),
      h('dt', null, 'Approved so far'),
      h('dd', {class: 'progress'}, `${a.approved} of ${a.required}`,
        approvedBy.length ? h('span', {class: 'subtle'}, ' — ', approvedBy.join(', ')) : null)),
    a.kind === 'inconclusive'
      ? h('p', {class: 'hint'}, 'The checks could not decide: approving keeps this release, ' +
        'rejecting rolls it back.')
      : null,
    acts ? actions(a) : null);
  }

  function actions(a) {
    const you = a.you || {may_decide: false, reason: 'the server did not say'};
    const may = Boolean(you.may_decide) && !busy.has(a.id);
    const reasonId = `approval-${a.id}-reason`;
    const whyId = `approval-${a.id}-why`;
    const textarea = h('textarea', {id: reasonId, name: 'reason', rows: 2, maxlength: 2000,
      disabled: !you.may_decide, 'aria-describedby': `${reasonId}-hint`},
    drafts.get(a.id) || '');
    const approve = h('button', {type: 'button', class: 'button button-primary',
      id: `approval-${a.id}-approve`, disabled: !may,
      'aria-describedby': you.may_decide ? null : whyId},
    h('span', {'aria-hidden': 'true'}, '✔'), ' Approve');
    const reject = h('button', {type: 'button', class: 'button button-danger',
      id: `approval-${a.id}-reject`, disabled: !may || !(drafts.get(a.id) || '').trim(),
      'aria-describedby': you.may_decide ? `${reasonId}-hint` : whyId},
    h('span', {'aria-hidden': 'true'}, '✖'), ' Reject');
    textarea.addEventListener('input', () => {
      drafts.set(a.id, textarea.value);
      reject.disabled = busy.has(a.id) || !textarea.value.trim();
    });
    approve.addEventListener('click', () => decide(a, 'approve', textarea.value));
    reject.addEventListener('click', () => {
      if (!textarea.value.trim()) {
        textarea.focus();
        return;
      }
      decide(a, 'reject', textarea.value);
    });
    return h('div', {class: 'decide'},
      h('div', {class: 'field'},
        h('label', {for: reasonId}, 'Reason'),
        textarea,
        h('p', {class: 'hint', id: `${reasonId}-hint`},
          'Required to reject; kept in the audit log with your decision.')),
      h('div', {class: 'actions'}, approve, reject,
        you.may_decide ? null : h('p', {class: 'refusal', id: whyId, role: 'note'},
          h('span', {'aria-hidden': 'true'}, '⊘ '), 'You cannot decide this: ', you.reason)));
  }

  async function decide(a, decision, reason) {
    const cards = () => [...pendingBox.querySelectorAll('article.approval')];
    const place = cards().findIndex((el) => el.id === `approval-${a.id}`);
    busy.add(a.id);
    last = null;
    await load();
    try {
      const text = reason.trim();
      const result = await ctx.api(`/approvals/${a.id}/${decision}`, {method: 'POST',
        body: text ? {reason: text} : {}});
      drafts.delete(a.id);
      ctx.toast(`${decision === 'approve' ? 'Approved' : 'Rejected'} ${a.service} ${a.version} ` +
        `for ${a.environment} (approval is now ${result.status})`, 'success');
    } catch (err) {
      ctx.toast(`Could not ${decision}: ${err.message}`, 'error');
    } finally {
      busy.delete(a.id);
      last = null;
      await reload();
      // The decided card has left the list: on to the one that took its place, else the list.
      refocus(() => cards()[Math.max(0, Math.min(place, cards().length - 1))] ||
        document.getElementById('pending-title'));
    }
  }

  await load();
  return ctx.live(['delivery', 'approvals'], () => { reload(); });
}

function recentTable(rows) {
  return h('div', {class: 'table-wrap'}, h('table', {class: 'recent'},
    h('thead', null, h('tr', null,
      ['Service', 'Environment', 'Release', 'Outcome', 'Decided by', 'When'].map(
        (t) => h('th', {scope: 'col'}, t)))),
    h('tbody', null, rows.map((a) => h('tr', {dataset: {approval: String(a.id)}},
      h('td', null, a.service),
      h('td', null, h('a', {href: envPath(a.service, a.environment)}, a.environment)),
      h('td', null, h('a', {href: `/releases/${a.release}`}, a.version)),
      h('td', null, badge(a.status), a.reason ? h('div', {class: 'subtle'}, a.reason) : null),
      h('td', null, (a.decisions || []).length
        ? (a.decisions || []).map((d) => h('div', null,
          `${d.user} ${d.decision === 'approve' ? 'approved' : 'rejected'}`,
          d.reason ? h('span', {class: 'subtle'}, `: ${d.reason}`) : null))
        : h('span', {class: 'subtle'}, 'nobody (policy)')),
      h('td', null, timeEl(a.decided_at || lastAt(a))))))));
}

function lastAt(a) {
  const times = (a.decisions || []).map((d) => d.at).filter(Boolean).sort();
  return times.length ? times[times.length - 1] : a.requested_at;
}
