// Every deployment, newest first: filters (service, environment, status, author, since, a
// search of the release's commit subject or sha) kept in the URL, keyset paging both ways, live.

import {h, badge} from '../lib/dom.js';
import {between, duration, envPath, firstLine, shortSha} from '../lib/format.js';
import {PER_PAGE, cell, namesFrom, renderList, zonedTime} from './list/listing.js';

// The shell loads pages/deployments.css with this page.
export const styled = true;

export const STATUSES = ['queued', 'awaiting_approval', 'held', 'deploying', 'checking',
  'verifying', 'rolling_back', 'succeeded', 'failed', 'rolled_back', 'rejected', 'superseded',
  'cancelled'];

function row(dep) {
  const took = dep.started_at
    ? (dep.finished_at ? between(dep.started_at, dep.finished_at) : between(dep.started_at))
    : null;
  return h('tr', {dataset: {id: String(dep.id)}},
    cell('Deployment', h('a', {href: `/deployments/${dep.id}`, class: 'item-link'}, `#${dep.id}`),
      dep.kind === 'rollback' ? [' ', h('span', {class: 'subtle'}, 'rollback')] : null),
    cell('Service', dep.service),
    cell('Environment', h('a', {href: envPath(dep.service, dep.environment)}, dep.environment)),
    cell('Release', h('a', {href: `/releases/${dep.release}`}, dep.version), ' ',
      h('span', {class: 'item-subject'}, firstLine(dep.subject) || shortSha(dep.sha))),
    cell('Author', dep.author || '—'),
    cell('Status', badge(dep.status)),
    cell('Queued', zonedTime(dep.created_at)),
    cell('Duration', took === null ? h('span', {class: 'subtle'}, 'not started') :
      dep.finished_at ? duration(took) : `${duration(took)} so far`));
}

export async function render(root, params, ctx) {
  const [services, environments] = await Promise.all([
    namesFrom(ctx, '/services', 'name'), namesFrom(ctx, '/environments', 'environment')]);
  return renderList(root, params, ctx, {
    path: '/deployments',
    title: 'Deployments',
    intro: ['Every release put into an environment, or put back by a rollback, newest first. ',
      h('a', {href: '/releases'}, 'All releases')],
    noun: 'deployments',
    none: 'No deployments yet: a release goes to its first environment once its run succeeds.',
    fields: [
      {key: 'service', label: 'Service', kind: 'select', any: 'All services', options: services},
      {key: 'environment', label: 'Environment', kind: 'select', any: 'All environments',
        options: environments},
      {key: 'status', label: 'Status', kind: 'select', any: 'Any status', options: STATUSES},
      {key: 'author', label: 'Author', kind: 'text', placeholder: 'name'},
      {key: 'since', label: 'Since', kind: 'date'},
      {key: 'q', label: 'Search', kind: 'search', placeholder: 'commit message or sha'},
      PER_PAGE,
    ],
    columns: ['Deployment', 'Service', 'Environment', 'Release', 'Author', 'Status', 'Queued',
      'Duration'],
    row,
    topics: ['delivery'],
  });
}
