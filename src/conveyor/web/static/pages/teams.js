// Teams: named groups of services whose DORA figures are read side by side (the DORA page's
// portfolio, /dora?team=NAME). Anyone who reads sees them; creating, renaming, adding or
// removing services and deleting take what the API asks for the same (POST, PATCH and
// DELETE /api/v1/teams: the admin scope, limited to no service), so the page offers the
// controls only then and shows the server's own refusal whenever it gives one.

import {h, replace, clear, empty, errorBox, loadAndFollow} from '../lib/dom.js';
import {timeEl} from '../lib/format.js';

// The shell loads pages/teams.css with this page.
export const styled = true;

const LIVE_DEBOUNCE_MS = 300;

export async function render(root, params, ctx) {
  const me = ctx.me;
  const manages = Boolean(me && me.can.admin && !(me.services || []).length &&
    !(me.environments || []).length);
  let teams = [];
  let known = [];
  let drawn = null;

  const listBox = h('div', {id: 'teams-list'});
  const suggestions = h('datalist', {id: 'teams-known-services'});
  replace(root, h('section', {class: 'teams', 'aria-labelledby': 'teams-title'},
    h('div', {class: 'page-head'},
      h('h1', {id: 'teams-title'}, 'Teams'),
      h('p', {class: 'subtle'}, 'A team is a group of services whose DORA figures are read ' +
        'together, each service beside the others.')),
    manages ? createForm() : h('p', {class: 'teams-readonly', role: 'note'},
      'You can see the teams; creating and changing them takes the admin scope, ' +
      'with no service limits.'),
    h('section', {'aria-labelledby': 'teams-list-title'},
      h('h2', {id: 'teams-list-title'}, 'All teams'), listBox),
    suggestions));

  /** Names typed into one field: "a, b c" is a, b and c. */
  function names(text) {
    return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
  }

  /** The server's refusal in `box` (message and hint), marking `input` as the culprit. */
  function refuse(box, input, err) {
    replace(box, h('strong', null, err.message),
      err.hint ? h('span', {class: 'hint'}, ' ', err.hint) : null);
    box.hidden = false;
    if (input) {
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    }
  }

  function settle(box, ...inputs) {
    clear(box);
    box.hidden = true;
    for (const input of inputs) input.removeAttribute('aria-invalid');
  }

  function createForm() {
    const nameIn = h('input', {type: 'text', id: 'team-new-name', name: 'name',
      autocomplete: 'off', maxlength: 200, 'aria-describedby': 'team-new-error'});
    const servicesIn = h('input', {type: 'text', id: 'team-new-services', name: 'services',
      autocomplete: 'off', 'aria-describedby': 'team-new-services-hint team-new-error'});
    const error = h('p', {class: 'form-error', id: 'team-new-error', role: 'alert', hidden: true});
    const form = h('form', {class: 'card team-new', 'aria-labelledby': 'team-new-title'},
      h('h2', {id: 'team-new-title'}, 'New team'),
      h('div', {class: 'field'}, h('label', {for: 'team-new-name'}, 'Name'), nameIn),
      h('div', {class: 'field'}, h('label', {for: 'team-new-services'}, 'Services'), servicesIn,
        h('p', {class: 'hint', id: 'team-new-services-hint'},
          'Registered services, or ones imported history names; separate them with commas. ' +
          'More can be added once the team exists.')),
      error,
      h('div', {class: 'actions'},
        h('button', {type: 'submit', class: 'button button-primary'}, 'Create team')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const members = names(servicesIn.value);
      settle(error, nameIn, servicesIn);
      if (nameIn.value.trim() && !members.length) {
        // The API's own refusal would point at a command-line option.
        refuse(error, servicesIn, {message: 'a team needs at least one service: name them above'});
        return;
      }
      const button = form.querySelector('button[type="submit"]');
      button.disabled = true;
      try {
        const made = await ctx.api('/teams', {method: 'POST',
          body: {name: nameIn.value, services: members}});
        settle(error, nameIn, servicesIn);
        form.reset();
        ctx.toast(`Team ${made.name} created: ${made.services.join(', ')}`, 'success');
        await load();
      } catch (err) {
        const aboutServices = /service/.test(err.message) && !/team name/.test(err.message);
        refuse(error, aboutServices ? servicesIn : nameIn, err);
      } finally {
        button.disabled = false;
      }
    });
    return form;
  }

  /** Where the focus and what is typed in the list are, by team and control, so a redraw
   * (after a change, or another person's, announced live) gives them back. */
  function typedAndFocused() {
    const keyOf = (el) => {
      const card = el.closest('article.team');
      return card ? `${card.dataset.team}\t${el.name || el.getAttribute('aria-label')}` : null;
    };
    const typed = new Map();
    const invalid = new Set();
    for (const input of listBox.querySelectorAll('input')) {
      if (input.value !== (input.dataset.initial || '')) typed.set(keyOf(input), input.value);
      if (input.getAttribute('aria-invalid')) invalid.add(keyOf(input));
    }
    // A refusal stays in its card until its team changes.
    const refusals = new Map([...listBox.querySelectorAll('article.team .form-error:not([hidden])')]
      .map((el) => [el.closest('article.team').dataset.team, [...el.childNodes]]));
    const active = document.activeElement;
    return {typed, invalid, refusals,
      focused: active && listBox.contains(active) ? keyOf(active) : null};
  }

  function giveBack({typed, invalid, refusals, focused}) {
    for (const card of listBox.querySelectorAll('article.team')) {
      const said = refusals.get(card.dataset.team);
      if (said) replace(card.querySelector('.form-error'), said).hidden = false;
      for (const el of card.querySelectorAll('input, button')) {
        const key = `${card.dataset.team}\t${el.name || el.getAttribute('aria-label')}`;
        if (el.tagName === 'INPUT' && typed.has(key)) el.value = typed.get(key);
        if (invalid.has(key)) el.setAttribute('aria-invalid', 'true');
        if (key === focused) el.focus();
      }
    }
  }

  async function load() {
    try {
      const [list, services] = await Promise.all([ctx.api('/teams'),
        ctx.api('/services').catch(() => [])]);
      teams = list || [];
      known = [...new Set([...(services || []).map((s) => s.name),
        ...teams.flatMap((t) => t.services)])].sort();
    } catch (err) {
      replace(listBox, errorBox(err, 'The teams could not be loaded'));
      return;
    }
    // A live nudge for what this page already shows (its own change) draws nothing again.
    const signature = JSON.stringify([teams, known]);
    if (signature === drawn) return;
    drawn = signature;
    const kept = typedAndFocused();
    replace(suggestions, known.map((n) => h('option', {value: n})));
    replace(listBox, teams.length
      ? h('ul', {class: 'team-list'}, teams.map((t, i) => h('li', null, teamCard(t, i))))
      : empty(manages ? 'No team yet: create the first one above.' : 'No team yet.'));
    giveBack(kept);
  }

  function teamCard(team, i) {
    const id = `team-${i}`;
    const error = h('p', {class: 'form-error', id: `${id}-error`, role: 'alert', hidden: true});
    const portfolio = `/dora?team=${encodeURIComponent(team.name)}`;
    return h('article', {class: 'card team', id, 'aria-labelledby': `${id}-title`,
      dataset: {team: team.name}},
    h('h3', {id: `${id}-title`}, team.name),
    h('p', {class: 'subtle'}, `${team.services.length} service` +
      `${team.services.length === 1 ? '' : 's'} · created `, timeEl(team.created_at),
    team.created_by ? ` by ${team.created_by}` : null),
    h('ul', {class: 'team-services', 'aria-label': `Services of ${team.name}`},
      team.services.map((s) => h('li', {dataset: {service: s}}, h('span', null, s),
        manages ? h('button', {type: 'button', class: 'button button-quiet',
          'aria-label': `Remove ${s} from ${team.name}`,
          onclick: () => change(team, {remove: [s]}, error, null,
            `${s} removed from ${team.name}`)}, 'Remove') : null))),
    h('p', null, h('a', {href: portfolio, class: 'team-portfolio'},
      `DORA side by side for ${team.name}`)),
    manages ? editForms(team, id, error) : null,
    error);
  }

  function editForms(team, id, error) {
    /** One field and its button; `submit(input)` changes the team from what was typed. */
    const oneField = (key, label, button, attrs, submit) => {
      const input = h('input', {type: 'text', id: `${id}-${key}`, name: key, autocomplete: 'off',
        'aria-describedby': `${id}-error`, ...attrs});
      const form = h('form', {class: 'team-edit'}, h('label', {for: input.id}, label),
        h('div', {class: 'inline'}, input, h('button', {type: 'submit', class: 'button'}, button)));
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        submit(input);
      });
      return form;
    };
    const addForm = oneField('add', 'Add a service', 'Add', {list: 'teams-known-services'},
      (input) => {
        const added = names(input.value);
        change(team, {add: added}, error, input, `${added.join(', ')} added to ${team.name}`);
      });
    const renameForm = oneField('name', 'Name', 'Rename',
      {maxlength: 200, value: team.name, dataset: {initial: team.name}},
      (input) => change(team, {name: input.value}, error, input,
        `Team ${team.name} renamed to ${input.value.trim()}`));
    const remove = h('button', {type: 'button', class: 'button button-danger'}, 'Delete team');
    remove.addEventListener('click', async () => {
      const sure = await ctx.confirm(`Delete team ${team.name}? Its services and their ` +
        'history stay.', {confirmLabel: 'Delete team', danger: true});
      if (!sure) return;
      try {
        await ctx.api(`/teams/${encodeURIComponent(team.name)}`, {method: 'DELETE'});
        ctx.toast(`Team ${team.name} deleted`, 'success');
        await load();
      } catch (err) {
        refuse(error, null, err);
      }
    });
    return h('div', {class: 'team-edits'}, addForm, renameForm,
      h('div', {class: 'actions'}, remove));
  }

  /** PATCH the team; on success the list is drawn again with the focus back in the team's
   * card (on its field, or on "Add a service" after a removal), on a refusal it says why. */
  async function change(team, body, error, input, done) {
    let changed;
    try {
      changed = await ctx.api(`/teams/${encodeURIComponent(team.name)}`, {method: 'PATCH', body});
    } catch (err) {
      refuse(error, input, err);
      return;
    }
    ctx.toast(done, 'success');
    settle(error, ...(input ? [input] : []));
    // What was typed is done: the field starts afresh (the new name shows in its own).
    if (input) input.value = input.dataset.initial || '';
    await load();
    const card = listBox.querySelector(`article.team[data-team="${CSS.escape(changed.name)}"]`);
    const again = card && card.querySelector(`input[name="${input ? input.name : 'add'}"]`);
    if (again) again.focus();
  }

  // Teams change elsewhere too (the CLI, another person): follow them.
  return loadAndFollow(ctx, ['teams'], load, LIVE_DEBOUNCE_MS, () => {});
}
