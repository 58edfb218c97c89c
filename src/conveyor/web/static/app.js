// The shell: routes UI paths to page modules, gives them ctx (docs/decisions/0008-web-ui.md),
// keeps the header (sign-in state, approvals count) and one live-update stream.

import {api as rawApi, ApiError} from './lib/api.js';
import {h, clear, errorBox} from './lib/dom.js';

export {ApiError};

const ROUTES = [
  [/^\/$/, 'overview', []],
  [/^\/runs$/, 'runs', []],
  [/^\/runs\/([^/]+)$/, 'run', ['id']],
  [/^\/releases$/, 'releases', []],
  [/^\/releases\/([^/]+)$/, 'release', ['id']],
  [/^\/releases\/([^/]+)\/compare\/([^/]+)$/, 'compare', ['base', 'head']],
  [/^\/deployments$/, 'deployments', []],
  [/^\/deployments\/([^/]+)$/, 'deployment', ['id']],
  [/^\/services\/([^/]+)\/environments\/([^/]+)$/, 'environment', ['service', 'env']],
  [/^\/approvals$/, 'approvals', []],
  [/^\/dora$/, 'dora', []],
  [/^\/teams$/, 'teams', []],
  [/^\/incidents$/, 'incidents', []],
  [/^\/incidents\/([^/]+)$/, 'incident', ['id']],
  [/^\/inbox$/, 'inbox', []],
  [/^\/signin$/, 'signin', []],
];
const TITLES = {
  overview: 'Overview', runs: 'Runs', run: 'Run', releases: 'Releases', release: 'Release',
  environment: 'Environment', approvals: 'Approvals', dora: 'DORA', teams: 'Teams',
  incidents: 'Incidents', inbox: 'Inbox', signin: 'Sign in', deployments: 'Deployments',
  deployment: 'Deployment', incident: 'Incident', compare: 'Compare releases',
};

const main = document.getElementById('main');
let me = null;
let cleanup = null;
let renderSeq = 0;

function match(pathname) {
  const path = pathname.length > 1 ? pathname.replace(/\/+$/, '') : pathname;
  for (const [re, name, keys] of ROUTES) {
    const m = re.exec(path);
    if (!m) continue;
    const params = {};
    keys.forEach((key, i) => { params[key] = decodeURIComponent(m[i + 1]); });
    return {name, params};
  }
  return null;
}

// --- ctx.api: on 401 the session is gone, so go to sign-in ----------------------------------

async function api(path, options) {
  try {
    return await rawApi(path, options);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401 && location.pathname !== '/signin') {
      toSignIn();
    }
    throw err;
  }
}

function toSignIn() {
  const next = location.pathname + location.search;
  location.assign('/signin?next=' + encodeURIComponent(next));
}

function describe(data) {
  const scopes = new Set(data.scopes || []);
  const can = data.can || {
    read: scopes.has('read') || scopes.has('admin'),
    trigger: scopes.has('trigger') || scopes.has('admin'),
    approve: scopes.has('approve') || scopes.has('admin'),
    admin: scopes.has('admin'),
  };
  return {...data, scopes: [...scopes], can};
}

async function loadMe() {
  try {
    me = describe(await rawApi('/me'));
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) throw err;
    me = null;
  }
  return me;
}

// --- live updates: one EventSource, fanned out to subscribers --------------------------------

// Page subscriptions end with the page; the shell's own (the approvals count) stay.
const subscribers = new Set();
const shellSubscribers = new Set();
let source = null;
let retryMs = 1000;
let retryTimer = null;
const liveState = document.getElementById('live-state');

function setLiveState(text, ok) {
  liveState.textContent = ok ? '● live' : '○ ' + text;
  liveState.dataset.ok = ok ? 'yes' : 'no';
  liveState.title = ok ? 'Live updates are on' : 'Live updates: ' + text;
}

function openStream() {
  if (source || !me) return;
  source = new EventSource('/api/v1/stream');
  source.addEventListener('open', () => {
    retryMs = 1000;
    setLiveState('connected', true);
  });
  source.addEventListener('change', (event) => {
    let channel;
    try {
      channel = JSON.parse(event.data).channel;
    } catch {
      return;
    }
    for (const sub of [...subscribers, ...shellSubscribers]) {
      if (sub.channels.has(channel)) {
        try {
          sub.callback(channel);
        } catch (err) {
          console.error('live subscriber failed', err);
        }
      }
    }
  });
  source.addEventListener('error', () => {
    // EventSource retries by itself only on some errors; take over with a growing backoff,
    // and check whether the session is still good before trying again.
    source.close();
    source = null;
    setLiveState('reconnecting', false);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(async () => {
      retryMs = Math.min(retryMs * 2, 30000);
      try {
        if (!(await loadMe())) return toSignIn();
      } catch {
        // the server is away; try again later
      }
      openStream();
      // Whatever changed while away: let every subscriber reload once.
      for (const sub of [...subscribers, ...shellSubscribers]) sub.callback(null);
    }, retryMs);
  });
}

function live(channels, callback) {
  const sub = {channels: new Set(channels), callback};
  subscribers.add(sub);
  openStream();
  return () => subscribers.delete(sub);
}

// --- toasts and the confirm dialog -----------------------------------------------------------

function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  const icon = {info: 'ℹ', success: '✔', error: '✖', warning: '⚠'}[kind] || 'ℹ';
  const el = h('div', {class: ['toast', `toast-${kind}`]},
    h('span', {'aria-hidden': 'true'}, icon), ' ', message,
    h('button', {type: 'button', class: 'toast-close', 'aria-label': 'Dismiss',
      onclick: () => el.remove()}, '×'));
  box.appendChild(el);
  setTimeout(() => el.remove(), kind === 'error' ? 10000 : 5000);
}

/** A real modal <dialog>; resolves true when confirmed. Options: {confirmLabel, danger}. */
function confirm(message, {confirmLabel = 'Confirm', danger = false} = {}) {
  const dialog = document.getElementById('confirm');
  const ok = document.getElementById('confirm-ok');
  document.getElementById('confirm-message').textContent = message;
  ok.textContent = confirmLabel;
  ok.classList.toggle('button-danger', danger);
  ok.classList.toggle('button-primary', !danger);
  const opener = document.activeElement;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'ok');
      if (opener && opener.focus) opener.focus();
    }, {once: true});
    dialog.returnValue = 'cancel';
    dialog.showModal();
    // The safe choice has focus first.
    dialog.querySelector('button[value="cancel"]').focus();
  });
}

// --- the header ------------------------------------------------------------------------------

let approvalsTimer = null;

async function refreshApprovalsCount() {
  const badge = document.getElementById('nav-approvals-count');
  if (!me) return;
  try {
    const data = await rawApi('/approvals');
    const items = Array.isArray(data) ? data : (data && (data.approvals || data.items)) || [];
    const pending = items.filter((a) => !a.status || a.status === 'pending').length;
    badge.textContent = String(pending);
    badge.hidden = pending === 0;
    badge.setAttribute('aria-label', `${pending} pending`);
  } catch {
    badge.hidden = true;
  }
}

function renderHeader(name) {
  const who = document.getElementById('who');
  who.hidden = !me;
  if (me) {
    const scopes = me.can.admin ? 'admin' : me.scopes.filter((s) => s !== 'runner').join(', ');
    document.getElementById('who-name').textContent = `${me.user || me.name} (${scopes})`;
  }
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

document.getElementById('signout').addEventListener('click', async () => {
  try {
    await rawApi('/session', {method: 'DELETE'});
  } catch {
    // signed out on this side either way
  }
  location.assign('/signin');
});

// --- routing ---------------------------------------------------------------------------------

// A page's own stylesheet (pages/NAME.css), added once, when the page first shows.
function useStyle(name) {
  if (document.querySelector(`link[data-page-style="${name}"]`)) return;
  document.head.appendChild(h('link', {rel: 'stylesheet', href: `/static/pages/${name}.css`,
    dataset: {pageStyle: name}}));
}

async function render() {
  const seq = ++renderSeq;
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.error('page cleanup failed', err);
    }
    cleanup = null;
  }
  // A page's subscriptions end with it, even if it forgot to unsubscribe.
  subscribers.clear();
  const route = match(location.pathname);
  const name = route ? route.name : null;
  if (name !== 'signin' && !me) {
    try {
      await loadMe();
    } catch (err) {
      clear(main).appendChild(errorBox(err, 'The server could not be reached'));
      return;
    }
    // An unknown address shows its "not found" page signed in or not (the server answers 404).
    if (!me && route) return toSignIn();
  }
  renderHeader(name);
  document.title = (name ? TITLES[name] : 'Not found') + ' · Conveyor';
  clear(main);
  if (!route) {
    main.appendChild(notFound());
    return;
  }
  const params = {...route.params, query: new URLSearchParams(location.search)};
  let module;
  try {
    module = await import(`./pages/${name}.js`);
    if (module.styled) useStyle(name);
  } catch (err) {
    if (seq !== renderSeq) return;
    console.error(err);
    main.appendChild(h('section', null, h('h1', null, TITLES[name]),
      h('p', {class: 'empty'}, 'This page is not available in this version of Conveyor.')));
    return;
  }
  if (seq !== renderSeq) return;
  try {
    const result = await module.render(main, params, ctx);
    if (seq !== renderSeq) {
      if (typeof result === 'function') result();
      return;
    }
    if (typeof result === 'function') cleanup = result;
  } catch (err) {
    if (seq !== renderSeq) return;
    console.error(err);
    clear(main).appendChild(errorBox(err));
  }
}

function notFound() {
  return h('section', {class: 'not-found'},
    h('h1', null, 'Page not found'),
    h('p', null, 'There is no page at ', h('code', null, location.pathname),
      '. The link may be old, or the address mistyped.'),
    h('ul', {class: 'not-found-links'},
      h('li', null, h('a', {href: '/'}, 'The overview'), ': every service and environment'),
      h('li', null, h('a', {href: '/runs'}, 'All runs')),
      h('li', null, h('a', {href: '/releases'}, 'All releases')),
      h('li', null, h('a', {href: '/deployments'}, 'All deployments'))));
}

function navigate(path, {replace = false} = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  window.scrollTo(0, 0);
  render().then(() => main.focus({preventScroll: true}));
}

document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest('a[href]');
  if (!link || link.target || link.hasAttribute('download')) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin) return;
  if (url.pathname.startsWith('/api/') || url.pathname.startsWith('/static/')) return;
  if (url.pathname === location.pathname && url.search === location.search && url.hash) return;
  if (!match(url.pathname)) return;
  event.preventDefault();
  navigate(url.pathname + url.search + url.hash);
});

window.addEventListener('popstate', () => render());

const ctx = {
  api,
  get me() { return me; },
  live,
  navigate,
  toast,
  confirm,
  /** After signing in or out, the page may ask the shell to read /me again. */
  async refreshMe() {
    await loadMe();
    renderHeader(match(location.pathname)?.name);
    return me;
  },
};

async function start() {
  setLiveState('off', false);
  await render();
  if (me) {
    openStream();
    refreshApprovalsCount();
    // The count follows approvals as they are requested and decided.
    shellSubscribers.add({channels: new Set(['delivery', 'approvals']), callback: () => {
      clearTimeout(approvalsTimer);
      approvalsTimer = setTimeout(refreshApprovalsCount, 200);
    }});
  }
}

start();
