// The run page's header: service, number and status, the commit, the facts (trigger, ref,
// times, release) and, for those who may trigger runs, the cancel and re-run buttons.

import {h, replace, badge, keepingFocus} from '../../lib/dom.js';
import {timeEl, shortSha, firstLine} from '../../lib/format.js';
import {TERMINAL, BAD, branch, durationEl} from './common.js';

/**
 * The header's elements, filled from `page.run` by the returned render(). `page` is the run
 * page's shared state: {id, ctx, run, disposed, refresh()}.
 */
export function createHeader(page) {
  const {id, ctx} = page;
  const canTrigger = Boolean(ctx.me && ctx.me.can && ctx.me.can.trigger);
  const heading = h('h1', {class: 'run-title'});
  const facts = h('dl', {class: 'run-facts'});
  const commitLine = h('p', {class: 'run-commit'});
  const reasonLine = h('p', {class: 'run-reason', hidden: true});
  const actions = h('div', {class: 'run-actions', role: 'group', 'aria-label': 'Run actions'});
  let busy = false;

  function render() {
    const run = page.run;
    document.title = `Run #${run.id} · ${run.service} · Conveyor`;
    replace(heading,
      h('span', {class: 'run-service'}, run.service), ' ',
      h('span', {class: 'run-number'}, `run #${run.id}`), ' ',
      h('span', {class: 'run-status', 'data-testid': 'run-status'}, badge(run.status)));
    const commit = run.commit || {};
    const subject = firstLine(run.subject || commit.subject || commit.message || '');
    replace(commitLine,
      h('code', {class: 'sha', title: run.sha}, shortSha(run.sha)), ' ',
      h('span', {class: 'run-subject'}, subject || '(no message)'),
      run.author || commit.author_name
        ? h('span', {class: 'run-author'}, ' — ', run.author || commit.author_name) : null);
    reasonLine.hidden = !run.reason;
    reasonLine.classList.toggle('run-reason-bad', BAD.has(run.status));
    reasonLine.textContent = run.reason || '';
    const fact = (term, ...value) => h('div', {class: 'fact'}, h('dt', null, term), h('dd', null, ...value));
    keepingFocus(facts, () => replace(facts,
      fact('Trigger', run.trigger),
      run.ref ? fact('Ref', h('code', {title: run.ref}, branch(run.ref))) : null,
      fact('Queued', timeEl(run.created_at)),
      fact('Started', run.started_at ? timeEl(run.started_at) : 'not yet'),
      fact('Duration', durationEl(run.duration, run.started_at, run.finished_at)),
      run.finished_at ? fact('Finished', timeEl(run.finished_at)) : null,
      run.release
        ? fact('Release', h('a', {href: `/releases/${run.release}`}, `release #${run.release}`))
        : null,
      run.rerun_of
        ? fact('Re-run of', h('a', {href: `/runs/${run.rerun_of}`}, `run #${run.rerun_of}`))
        : null));
    renderActions();
  }

  let actionsKey = null;
  function renderActions() {
    if (!canTrigger) return; // read-only viewers get no buttons; the server refuses anyway
    const run = page.run;
    const ended = TERMINAL.has(run.status);
    const key = `${ended}:${run.status}:${busy}`;
    if (key === actionsKey) return; // keep the focused button in place across refreshes
    actionsKey = key;
    const buttons = [];
    if (!ended) {
      buttons.push(h('button', {type: 'button', class: 'button button-danger', disabled: busy,
        onclick: cancel}, h('span', {'aria-hidden': 'true'}, '⊘ '), 'Cancel run'));
    } else {
      if (run.status !== 'succeeded') {
        buttons.push(h('button', {type: 'button', class: 'button button-primary', disabled: busy,
          onclick: () => rerun(true)}, h('span', {'aria-hidden': 'true'}, '↻ '),
        'Re-run failed jobs'));
      }
      buttons.push(h('button', {type: 'button', class: 'button', disabled: busy,
        onclick: () => rerun(false)}, h('span', {'aria-hidden': 'true'}, '↻ '), 'Re-run all jobs'));
    }
    // The run ending turns Cancel into Re-run: focus moves on to it.
    keepingFocus(actions, () => replace(actions, buttons));
  }

  async function cancel() {
    const run = page.run;
    const ok = await ctx.confirm(
      `Cancel run #${run.id} of ${run.service}? Its running steps are stopped.`,
      {confirmLabel: 'Cancel run', danger: true});
    if (!ok || page.disposed) return;
    busy = true;
    renderActions();
    try {
      await ctx.api(`/runs/${id}/cancel`, {method: 'POST'});
      ctx.toast(`Cancelling run #${page.run.id}`, 'info');
    } catch (err) {
      ctx.toast(`Could not cancel: ${err.message}`, 'error');
    } finally {
      busy = false;
      actionsKey = null;
      page.refresh();
    }
  }

  async function rerun(failedOnly) {
    busy = true;
    renderActions();
    try {
      const next = await ctx.api(`/runs/${id}/rerun`, {method: 'POST', body: {failed_only: failedOnly}});
      ctx.toast(failedOnly ? `Run #${next.id} re-runs the failed jobs` : `Run #${next.id} queued`,
        'success');
      ctx.navigate(`/runs/${next.id}`);
    } catch (err) {
      busy = false;
      actionsKey = null;
      renderActions();
      ctx.toast(`Could not re-run: ${err.message}`, 'error');
    }
  }

  return {heading, facts, commitLine, reasonLine, actions, render};
}
