// Every run, newest first: filters (service, status, branch, author, since, a search of the
// commit's subject or sha) kept in the URL, keyset paging by the last run shown, live updates.

import {h, badge} from '../lib/dom.js';
import {between, duration, firstLine, shortSha} from '../lib/format.js';
import {PER_PAGE, branchOf, cell, namesFrom, renderList, zonedTime} from './list/listing.js';

// The shell loads pages/runs.css with this page.
export const styled = true;

const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted',
  'superseded'];

function row(run) {
  const took = run.duration ?? (run.started_at && !run.finished_at ? between(run.started_at) : null);
  return h('tr', {dataset: {id: String(run.id)}},
    cell('Run', h('a', {href: `/runs/${run.id}`, class: 'item-link'}, `#${run.id}`)),
    cell('Service', run.service),
    cell('Branch', branchOf(run.ref) ?? h('span', {class: 'subtle'}, '—')),
    cell('Commit', h('code', {class: 'mono'}, shortSha(run.sha)), ' ',
      h('span', {class: 'item-subject'}, firstLine(run.subject))),
    cell('Author', run.author || '—'),
    cell('Status', badge(run.status)),
    cell('Started', run.started_at ? zonedTime(run.started_at) : h('span', {class: 'subtle'}, 'not yet')),
    cell('Duration', duration(took)));
}

export async function render(root, params, ctx) {
  const services = await namesFrom(ctx, '/services', 'name');
  return renderList(root, params, ctx, {
    path: '/runs',
    title: 'Runs',
    intro: 'Every run of every service, newest first.',
    noun: 'runs',
    none: 'No runs yet: push a commit or run `conveyor run`.',
    fields: [
      {key: 'service', label: 'Service', kind: 'select', any: 'All services', options: services},
      {key: 'status', label: 'Status', kind: 'select', any: 'Any status', options: STATUSES},
      {key: 'branch', label: 'Branch', kind: 'text', placeholder: 'main'},
      {key: 'author', label: 'Author', kind: 'text', placeholder: 'name'},
      {key: 'since', label: 'Since', kind: 'date'},
      {key: 'q', label: 'Search', kind: 'search', placeholder: 'commit message or sha'},
      PER_PAGE,
    ],
    columns: ['Run', 'Service', 'Branch', 'Commit', 'Author', 'Status', 'Started', 'Duration'],
    row,
    // Runs are queued, and their jobs end, on this channel.
    topics: ['dispatch'],
  });
}
