// Approvals inbox: deployments waiting for a person, with Approve and Reject. Whether the
// signed-in person may decide each one comes from the server (GET /api/v1/approvals → `you`),
// which applies the same rules as when they press the button; the page only shows them.
// Each card says what the decision is about (`context`): what serves now, the commits coming
// and who wrote them, how the checks went where the release has been, and the forge's diff.
// After a decision, focus moves to the next card's Approve button or to the outcome's message.

import {h, replace, badge, empty, errorBox, keepingFocus} from '../lib/dom.js';
import {timeEl, shortSha, firstLine, envPath} from '../lib/format.js';
import {httpHref} from '../lib/urls.js';

// The shell loads pages/approvals.css with this page.
export const styled = true;

const RECENT = 10;
// A check's outcome as a badge state and its words.
const OUTCOMES = {
  pass: ['succeeded', 'pass'],
  fail: ['failed', 'fail'],
  inconclusive: ['held', 'inconclusive'],
};

export async function render(root, params, ctx) {
  // Read-only viewers get no action buttons; anyone else sees them, disabled with the reason
  // when they may not decide.
  const acts = Boolean(ctx.me && (ctx.me.can.approve || ctx.me.can.trigger || ctx.me.can.admin));
  // Reasons being typed survive a live refresh of the list.
  const drafts = new Map();
  const busy = new Set();
  let last = null;
  let loading = null;
  // The last decision in words, while its message is shown.
  let outcome = null;

  const pendingBox = h('div', {id: 'approvals-pending'});
  const recentBox = h('div', {id: 'approvals-recent'});
  // Where focus goes after a decision when no other card can take it: the outcome, in words.
  const status = h('p', {id: 'approvals-status', class: 'decision-status', tabindex: '-1',
    hidden: true});
  replace(root,
    h('div', {class: 'page-head'},
      h('h1', null, 'Approvals'),
      h('p', {class: 'subtle'}, 'Deployments waiting for a person’s decision.')),
    h('section', {'aria-labelledby': 'pending-title'},
      h('h2', {id: 'pending-title', tabindex: '-1'}, 'Waiting for a decision'), status,
      pendingBox),
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
    // The last decision's outcome stays while it has focus, with what waits now.
    if (document.activeElement === status && outcome) showStatus(pending.length);
    else status.hidden = true;
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
    a.context ? context(a) : null,
    acts ? actions(a) : null);
  }

  /** What approving brings: what serves now, the commits and their authors, the diff on the
   * forge, and how the release's checks went in the environments it has been through. */
  function context(a) {
    const c = a.context;
    const id = `approval-${a.id}`;
    const compare = httpHref(c.compare_url);
    const more = c.commit_count - c.commits.length;
    return h('div', {class: 'context'},
      h('dl', {class: 'facts'},
        h('dt', null, 'Serving now'),
        h('dd', {id: `${id}-serving`}, c.serving
          ? [h('a', {href: `/releases/${c.serving.release}`}, c.serving.version), ' ',
            h('span', {class: 'sha', title: c.serving.sha}, shortSha(c.serving.sha))]
          : h('span', {class: 'subtle'}, 'nothing yet')),
        h('dt', null, 'Brings'),
        h('dd', {id: `${id}-brings`}, c.problem
          ? h('span', {class: 'refusal-inline'}, 'the commits cannot be read: ', c.problem)
          : [`${c.commit_count} commit${c.commit_count === 1 ? '' : 's'}`,
            c.authors.length ? ` by ${c.authors.join(', ')}` : '',
            c.base ? h('span', {class: 'subtle'}, ` since ${shortSha(c.base)}`) : null,
            compare ? [' · ', h('a', {href: compare, rel: 'noopener noreferrer',
              id: `${id}-compare`}, 'View the diff')] : null])),
      c.commits.length
        ? h('details', {class: 'coming', id: `${id}-commits`, open: c.commit_count <= 5},
          h('summary', null, 'Commits coming'),
          h('ul', {'aria-label': 'Commits coming'}, c.commits.map((m) => h('li', null,
            h('span', {class: 'sha', title: m.sha}, shortSha(m.sha)), ' ',
            h('span', {class: 'subject'}, m.subject || '—'),
            h('span', {class: 'subtle'}, ' — ', m.author)))),
          more > 0 ? h('p', {class: 'subtle'}, `and ${more} more`) : null)
        : null,
      h('section', {class: 'on-the-way', 'aria-labelledby': `${id}-checks-title`},
        h('h4', {id: `${id}-checks-title`}, 'Checks on the way'),
        c.checks.length
          ? h('ul', {id: `${id}-checks`}, c.checks.map((d) => h('li', {dataset: {environment:
            d.environment}},
          h('a', {href: envPath(a.service, d.environment)}, d.environment), ' ', badge(d.status),
          d.checks.length
            ? h('ul', {class: 'checks'}, d.checks.map((k) => {
              const [state, label] = OUTCOMES[k.outcome] || ['unknown', k.outcome || 'unknown'];
              return h('li', {dataset: {outcome: k.outcome || ''}}, badge(state, label), ' ',
                h('span', {class: 'check-kind'}, k.kind), ' ', h('span', null, k.detail));
            }))
            : h('span', {class: 'subtle'}, ' — no checks ran'))))
          : empty('It has not been deployed anywhere before.')));
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
    // The cards in order before the decision: the one after it is the next to look at.
    const order = [...pendingBox.querySelectorAll('article[data-approval]')]
      .map((el) => Number(el.dataset.approval));
    busy.add(a.id);
    last = null;
    await load();
    let said;
    try {
      const text = reason.trim();
      const result = await ctx.api(`/approvals/${a.id}/${decision}`, {method: 'POST',
        body: text ? {reason: text} : {}});
      drafts.delete(a.id);
      said = `${decision === 'approve' ? 'Approved' : 'Rejected'} ${a.service} ${a.version} ` +
        `for ${a.environment}: the approval is now ${result.status}.`;
      ctx.toast(said, 'success');
    } catch (err) {
      said = `Could not ${decision}: ${err.message}`;
      ctx.toast(said, 'error');
    } finally {
      busy.delete(a.id);
      last = null;
      await reload();
    }
    placeFocus(a.id, decision, order, said);
  }

  /** After a decision on approval `id`: its own button again if it can still be pressed (the
   * decision failed), else the next card's Approve button, else the outcome's message; never
   * <body>, where a keyboard user would have to start again from the top. */
  function placeFocus(id, decision, order, said) {
    const button = (n, what) => {
      const el = document.getElementById(`approval-${n}-${what}`);
      return el && !el.disabled ? el : null;
    };
    const after = order.slice(order.indexOf(id) + 1).concat(order.slice(0, order.indexOf(id)));
    const target = button(id, decision) || after.map((n) => button(n, 'approve')).find(Boolean);
    outcome = said;
    showStatus(pendingBox.querySelectorAll('article[data-approval]').length);
    (target || status).focus();
  }

  function showStatus(remaining) {
    status.textContent = `${outcome} ${remaining
      ? `${remaining} ${remaining === 1 ? 'waits' : 'wait'} for a decision.`
      : 'Nothing else waits for approval.'}`;
    status.hidden = false;
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
