// Every release, newest first: filters (service, the environment it served in, since, author,
// a search of the commit's subject or sha) kept in the URL, keyset paging, live updates.

import {h} from '../lib/dom.js';
import {firstLine, shortSha} from '../lib/format.js';
import {PER_PAGE, branchOf, cell, namesFrom, renderList, zonedTime} from './list/listing.js';

// The shell loads pages/releases.css with this page.
export const styled = true;

function row(release) {
  return h('tr', {dataset: {id: String(release.id)}},
    cell('Release', h('a', {href: `/releases/${release.id}`, class: 'item-link'},
      `#${release.id}`)),
    cell('Service', release.service),
    cell('Branch', branchOf(release.ref) ?? h('span', {class: 'subtle'}, '—')),
    cell('Commit', h('code', {class: 'mono'}, shortSha(release.sha)), ' ',
      h('span', {class: 'item-subject'}, firstLine(release.subject))),
    cell('Author', release.author || '—'),
    cell('Built', zonedTime(release.created_at)),
    cell('Run', h('a', {href: `/runs/${release.run}`}, `run #${release.run}`)));
}

export async function render(root, params, ctx) {
  const [services, environments] = await Promise.all([
    namesFrom(ctx, '/services', 'name'), namesFrom(ctx, '/environments', 'environment')]);
  return renderList(root, params, ctx, {
    path: '/releases',
    title: 'Releases',
    intro: ['What each successful run made, newest first, and where it served. ',
      h('a', {href: '/deployments'}, 'Their deployments')],
    noun: 'releases',
    none: 'No releases yet: a run that succeeds makes one.',
    fields: [
      {key: 'service', label: 'Service', kind: 'select', any: 'All services', options: services},
      {key: 'environment', label: 'Served in', kind: 'select', any: 'Anywhere or nowhere',
        options: environments},
      {key: 'since', label: 'Since', kind: 'date'},
      {key: 'author', label: 'Author', kind: 'text', placeholder: 'name'},
      {key: 'q', label: 'Search', kind: 'search', placeholder: 'commit message or sha'},
      PER_PAGE,
    ],
    columns: ['Release', 'Service', 'Branch', 'Commit', 'Author', 'Built', 'Run'],
    row,
    topics: ['delivery'],
  });
}
