// Two releases of a service side by side (GET /releases/{base}/compare/{head}): the commits the
// second brings over the first, with their authors (and what it takes away, going back), then
// each release's run with its jobs, its artifacts, and its deployments with their checks.

import {h, replace, badge, errorBox} from '../lib/dom.js';
import {absTime, duration, envPath, shortSha, timeEl} from '../lib/format.js';
import {checkList, numberIn, section} from './detail/detail.js';

// The shell loads pages/compare.css with this page.
export const styled = true;

/** The compare page's address for release `base` to release `head`. */
export function comparePath(base, head) {
  return `/releases/${base}/compare/${head}`;
}

export async function render(root, params, ctx) {
  const base = numberIn(root, params.base, 'a release', 'Compare releases');
  if (base === null) return undefined;
  const head = numberIn(root, params.head, 'a release', 'Compare releases');
  if (head === null) return undefined;
  replace(root, h('p', {class: 'loading'}, 'Loading…'));
  let last = null;

  async function load() {
    let data;
    let releases;
    try {
      data = await ctx.api(comparePath(base, head));
      releases = await ctx.api(`/releases?service=${encodeURIComponent(data.service)}&limit=100`)
        .catch(() => []);
    } catch (err) {
      last = null;
      replace(root, h('h1', null, 'Compare releases'),
        errorBox(err, `Release ${base} and release ${head} could not be compared`));
      return;
    }
    const signature = JSON.stringify([data, releases.map((r) => r.id)]);
    if (signature === last) return;
    last = signature;
    replace(root, page(data, releases));
  }

  function pick(data, releases) {
    const options = (current) => {
      const ids = new Set(releases.map((r) => r.id));
      const all = [...releases];
      for (const side of [data.base.release, data.head.release]) {
        if (!ids.has(side.id)) all.push({id: side.id, sha: side.sha, subject: side.subject});
      }
      return all.sort((a, b) => b.id - a.id).map((r) => h('option',
        {value: String(r.id), selected: r.id === current},
        `#${r.id} ${shortSha(r.sha)} ${r.subject || ''}`.trim()));
    };
    const go = () => {
      const from = form.elements.base.value;
      const to = form.elements.head.value;
      ctx.navigate(comparePath(from, to));
    };
    const form = h('form', {class: 'compare-pick', 'aria-label': 'Releases to compare',
      onsubmit: (e) => { e.preventDefault(); go(); }},
    h('div', {class: 'field'}, h('label', {for: 'compare-base'}, 'From'),
      h('select', {id: 'compare-base', name: 'base', onchange: go}, options(base))),
    h('div', {class: 'field'}, h('label', {for: 'compare-head'}, 'To'),
      h('select', {id: 'compare-head', name: 'head', onchange: go}, options(head))),
    h('a', {class: 'button', href: comparePath(head, base)}, '⇄ Swap'));
    return form;
  }

  function page(data, releases) {
    const b = data.base.release;
    const t = data.head.release;
    const n = data.commits.length;
    const people = data.authors.length;
    return h('article', {class: ['detail-page', 'compare-page'], 'aria-labelledby': 'cmp-title'},
      h('div', {class: 'page-head'},
        h('h1', {id: 'cmp-title'}, h('span', {class: 'subtle-prefix'}, `${data.service} `),
          `${b.version} → ${t.version}`)),
      pick(data, releases),
      data.problem
        ? h('p', {class: 'error-box', role: 'alert'}, h('strong', null,
          'The commits could not be listed: '), data.problem)
        : h('p', {class: 'compare-summary'}, n === 0
          ? `${t.version} brings no commit that ${b.version} does not have.`
          : `${t.version} brings ${n}${n >= data.limit ? '+' : ''} commit${n === 1 ? '' : 's'}` +
            ` by ${people} author${people === 1 ? '' : 's'} over ${b.version}.`,
        data.removed.length ? ` Going from ${b.version} to ${t.version} takes away ` +
          `${data.removed.length} commit${data.removed.length === 1 ? '' : 's'}.` : ''),
      n ? section('cmp-commits', `Commits in ${t.version}, not in ${b.version}`,
        commitList(data.commits, 'Commits brought')) : null,
      people ? section('cmp-authors', 'Authors', h('ul', {class: 'detail-list',
        'aria-label': 'Authors'}, data.authors.map((a) => h('li', null, h('strong', null, a.name),
        h('span', {class: 'subtle'}, ` <${a.email}>`),
        ` — ${a.commits} commit${a.commits === 1 ? '' : 's'}`)))) : null,
      data.removed.length ? section('cmp-removed', `Commits in ${b.version}, not in ${t.version}`,
        commitList(data.removed, 'Commits taken away')) : null,
      h('div', {class: 'detail-columns'},
        side('cmp-base', `From ${b.version}`, data.base),
        side('cmp-head', `To ${t.version}`, data.head)));
  }

  await load();
  return ctx.live(['delivery'], () => { load(); });
}

function commitList(commits, label) {
  return h('ul', {class: 'commit-list', 'aria-label': label}, commits.map((c) => h('li', null,
    h('code', {class: 'sha', title: c.sha}, shortSha(c.sha)),
    h('span', {class: 'commit-subject'}, c.subject || '(no message)'),
    h('span', {class: 'commit-by'}, c.author, ' · ',
      h('time', {datetime: c.authored_at}, absTime(c.authored_at))))));
}

function side(id, title, s) {
  const r = s.release;
  const run = s.run;
  return section(id, title,
    h('div', {class: 'compare-side'},
      h('p', null, h('a', {href: `/releases/${r.id}`}, `Release ${r.version}`), ' ',
        h('span', {class: 'subtle'}, r.subject || ''), ' ', timeEl(r.created_at)),
      r.environments.length
        ? h('p', null, 'Serving in ', r.environments.map((e, i) => [i ? ', ' : '',
          h('a', {href: envPath(r.service, e)}, e)]))
        : h('p', {class: 'subtle'}, 'Not serving anywhere now.'),
      h('h3', null, 'Build and tests: ', h('a', {href: `/runs/${run.run}`}, `run #${run.run}`), ' ',
        badge(run.status)),
      h('ul', {class: 'detail-list', 'aria-label': `Jobs of ${r.version}`}, run.jobs.map((j) =>
        h('li', null, badge(j.status), ' ', h('span', {class: 'job-name'}, j.name), ' ',
          h('span', {class: 'subtle'}, duration(j.duration))))),
      h('h3', null, 'Artifacts'),
      s.built.artifacts.length
        ? h('table', {class: 'artifacts', 'aria-label': `Artifacts of ${r.version}`},
          h('thead', null, h('tr', null, h('th', {scope: 'col'}, 'Path'),
            h('th', {scope: 'col'}, 'Digest'))),
          h('tbody', null, s.built.artifacts.map((a) => h('tr', null,
            h('td', null, h('a', {href: `/api/v1/artifacts/${encodeURIComponent(a.digest)}`,
              download: a.path.split('/').pop()}, a.path)),
            h('td', null, h('code', {class: 'digest', title: a.digest},
              a.digest.replace(/^sha256:/, '').slice(0, 12)))))))
        : h('p', {class: 'empty'}, 'No artifacts.'),
      h('h3', null, 'Deployments and their checks'),
      s.deployments.length
        ? h('ul', {class: 'detail-list', 'aria-label': `Deployments of ${r.version}`},
          s.deployments.map((d) => h('li', {dataset: {deployment: String(d.deployment)}},
            h('a', {href: `/deployments/${d.deployment}`}, `#${d.deployment}`), ' ',
            d.kind === 'rollback' ? 'rollback to ' : 'to ', d.environment, ' ', badge(d.status),
            d.checks.length ? checkList(d.checks, `${id}-${d.deployment}`,
              `Checks of deployment ${d.deployment}`)
              : h('div', {class: 'subtle'}, 'No checks ran.'))))
        : h('p', {class: 'empty'}, 'Never deployed.')));
}
