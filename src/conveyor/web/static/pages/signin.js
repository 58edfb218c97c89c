// Sign in with an API token or a user name and password; the server sets a session cookie.

import {h, clear} from '../lib/dom.js';
import {api, ApiError} from '../lib/api.js';
import {safeNext} from '../lib/urls.js';

export async function render(root, params, ctx) {
  const next = safeNext(params.query.get('next'));
  const error = h('p', {class: 'form-error', role: 'alert', id: 'signin-error', hidden: true});
  let mode = 'token';

  const tokenField = h('div', {class: 'field', id: 'panel-token', role: 'tabpanel', 'aria-labelledby': 'tab-token'},
    h('label', {for: 'signin-token'}, 'API token'),
    h('input', {type: 'password', id: 'signin-token', name: 'token', autocomplete: 'off',
      spellcheck: 'false', placeholder: 'cvy_…', 'aria-describedby': 'signin-token-hint'}),
    h('p', {class: 'hint', id: 'signin-token-hint'},
      'A token from ', h('code', null, 'conveyor token create'),
      '. You will have its scopes: a read token sees everything and changes nothing.'));
  const passwordFields = h('div', {id: 'panel-password', role: 'tabpanel', 'aria-labelledby': 'tab-password', hidden: true},
    h('div', {class: 'field'},
      h('label', {for: 'signin-user'}, 'User name'),
      h('input', {type: 'text', id: 'signin-user', name: 'username', autocomplete: 'username',
        autocapitalize: 'off', spellcheck: 'false'})),
    h('div', {class: 'field'},
      h('label', {for: 'signin-password'}, 'Password'),
      h('input', {type: 'password', id: 'signin-password', name: 'password',
        autocomplete: 'current-password'})),
    h('p', {class: 'hint'}, 'Set with ', h('code', null, 'conveyor user add NAME --password'), '.'));

  const tabToken = h('button', {type: 'button', role: 'tab', id: 'tab-token',
    'aria-controls': 'panel-token', 'aria-selected': 'true'}, 'Token');
  const tabPassword = h('button', {type: 'button', role: 'tab', id: 'tab-password',
    'aria-controls': 'panel-password', 'aria-selected': 'false', tabindex: '-1'}, 'User and password');

  function select(which) {
    mode = which;
    const isToken = which === 'token';
    tabToken.setAttribute('aria-selected', String(isToken));
    tabPassword.setAttribute('aria-selected', String(!isToken));
    tabToken.tabIndex = isToken ? 0 : -1;
    tabPassword.tabIndex = isToken ? -1 : 0;
    tokenField.hidden = !isToken;
    passwordFields.hidden = isToken;
    error.hidden = true;
  }
  tabToken.addEventListener('click', () => select('token'));
  tabPassword.addEventListener('click', () => select('password'));
  // Arrow keys move between tabs, as in any tab list.
  for (const tab of [tabToken, tabPassword]) {
    tab.addEventListener('keydown', (event) => {
      if (event.key !== 'ArrowLeft' && event.key !== 'ArrowRight') return;
      event.preventDefault();
      const other = tab === tabToken ? tabPassword : tabToken;
      select(other === tabToken ? 'token' : 'password');
      other.focus();
    });
  }

  const submit = h('button', {type: 'submit', class: 'button button-primary'}, 'Sign in');
  const form = h('form', {class: 'card', novalidate: true},
    h('div', {role: 'tablist', 'aria-label': 'Sign in with'}, tabToken, tabPassword),
    tokenField, passwordFields, error,
    h('div', {class: 'actions'}, submit));

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    let body;
    if (mode === 'token') {
      const token = form.querySelector('#signin-token').value.trim();
      if (!token) return fail('Enter a token.');
      body = {token};
    } else {
      const user = form.querySelector('#signin-user').value.trim();
      const password = form.querySelector('#signin-password').value;
      if (!user || !password) return fail('Enter your user name and password.');
      body = {user, password};
    }
    submit.disabled = true;
    try {
      await api('/session', {method: 'POST', body});
    } catch (err) {
      submit.disabled = false;
      return fail(err instanceof ApiError ? err.message : String(err));
    }
    // A fresh load: the header, the live stream and every page start from the new session.
    location.assign(next);
  });

  function fail(message) {
    error.textContent = `✖ Could not sign in: ${message}`;
    error.hidden = false;
  }

  clear(root).appendChild(h('section', {class: 'signin'},
    h('h1', null, 'Sign in to Conveyor'),
    ctx.me ? h('p', {class: 'hint'}, `You are signed in as ${ctx.me.name}. Signing in again replaces that session.`) : null,
    form));
  form.querySelector('#signin-token').focus();
}
