// The DORA page's explanation dialog: what is behind a figure (or one bucket of a chart), from
// the report with explain=true, as a table of the deployments, commits, failures and releases
// that counted and how each counted, linked to their pages.

import {h, clear, replace, errorBox, empty} from '../../lib/dom.js';
import {general, fmtDuration, plural, show, capital, bucketLabel, localTime} from './figures.js';

const MAX_ROWS = 1000;

/**
 * The dialog. `report()` is the report shown (for titles and definitions), `explained()` the
 * promise of its explain=true version, `api` the shell's ctx.api (for release links).
 * Returns {el, open(metric, bucket), refresh()}.
 */
export function explanationDialog({report, explained, api}) {
  const title = h('h2', {id: 'explain-title'});
  const definition = h('p', {class: 'explain-definition'});
  const count = h('p', {class: 'explain-count', role: 'status'});
  const content = h('div', {class: 'explain-content'});
  const close = h('button', {type: 'button', class: 'button', onclick: () => el.close()},
    'Close');
  const el = h('dialog', {class: 'explain', 'aria-labelledby': 'explain-title'},
    h('div', {class: 'explain-head'}, title, close), definition, count, content);
  // A click on the backdrop (outside the box) closes, as people expect of a dialog.
  el.addEventListener('click', (e) => {
    if (e.target === el) el.close();
  });
  let current = null;
  let token = 0;
  let opener = null;
  el.addEventListener('close', () => {
    // Back to the number that opened it, so a keyboard user keeps their place.
    if (opener && opener.isConnected) opener.focus();
    opener = null;
  });

  async function fill() {
    const mine = ++token;
    const {metric, bucket} = current;
    const shown = report();
    const fig = shown && shown.metrics[metric];
    title.textContent = `Behind ${fig ? fig.title : metric}` +
      (bucket ? `, ${bucketLabel(bucket)}` : '');
    definition.textContent = fig ? capital(fig.definition) : '';
    count.textContent = 'Loading…';
    clear(content);
    let data;
    try {
      data = await explained();
    } catch (err) {
      if (mine === token) {
        count.textContent = '';
        replace(content, errorBox(err, 'The explanation could not be loaded'));
      }
      return;
    }
    if (mine !== token) return;
    const zone = data.window.time_zone;
    const all = (data.metrics[metric] && data.metrics[metric].explanation) || [];
    const items = bucket ? all.filter((it) => {
      const day = localTime(it.time, zone).slice(0, 10);
      return day >= bucket.start && day < bucket.end;
    }) : all;
    const value = show(metric, data.metrics[metric].value);
    count.textContent = `${plural(items.length, 'item')}` +
      (bucket ? ` in this ${data.settings.by} (${all.length} in the window)` : '') +
      ` behind ${value} · times in ${zone}`;
    const links = await releaseLinks(api, items);
    if (mine !== token) return;
    replace(content, table(metric, bucket, items, zone, links));
  }

  function table(metric, bucket, items, zone, links) {
    const shown = items.slice(0, MAX_ROWS);
    const valued = shown.some((it) => it.value !== null && it.value !== undefined);
    // How they counted, in a line: "28 ok · 8 failed · 1 excluded" (the first word of each).
    const tally = new Map();
    for (const it of items) {
      const found = /^(not \w+|[a-z]+)/.exec(String(it.how));
      const word = found ? found[1] : 'other';
      tally.set(word, (tally.get(word) || 0) + 1);
    }
    if (tally.size > 6) tally.clear();
    const columns = ['time', 'kind', 'id', 'service', ...(valued ? ['value'] : []), 'how'];
    return [
      tally.size > 1 ? h('p', {class: 'explain-summary'}, [...tally].map(([word, n]) =>
        `${n} ${word}`).join(' · ')) : null,
      bucket ? h('p', null, h('button', {type: 'button', class: 'button button-quiet',
        onclick: () => { current = {metric, bucket: null}; fill(); }},
      'Show the whole window')) : null,
      items.length ? h('div', {class: 'table-wrap'}, h('table', {class: 'explain-table'},
        h('caption', {class: 'visually-hidden'}, title.textContent),
        h('thead', null, h('tr', null, columns.map((c) => h('th', {scope: 'col'}, c)))),
        h('tbody', null, shown.map((it) => h('tr', {dataset: {kind: it.kind, id: it.id}},
          h('td', {class: 'nowrap'}, localTime(it.time, zone)),
          h('td', null, it.kind),
          h('td', {class: 'nowrap'}, idCell(it, links)),
          h('td', null, it.service),
          valued ? h('td', {class: 'num'}, valueOf(metric, it)) : null,
          h('td', null, it.how))))))
        : empty('Nothing: no deployment, commit, incident or release counted here.'),
      items.length > shown.length
        ? h('p', {class: 'subtle'}, `The first ${shown.length} of ${items.length} are shown; ` +
          '`conveyor dora --explain` lists them all.') : null,
    ];
  }

  return {
    el,
    open(metric, bucket) {
      current = {metric, bucket};
      if (!el.open) {
        opener = document.activeElement;
        el.showModal();
      }
      close.focus();
      fill();
    },
    refresh() {
      if (el.open && current) fill();
    },
  };
}

/** Conveyor's own deployments (`c12`) → their release, for a link to its page. */
async function releaseLinks(api, items) {
  const wanted = new Map();
  for (const it of items) {
    for (const key of [it.kind === 'deployment' || it.kind === 'failure' ? it.ref || it.id : null,
      it.deployment_ref || it.deployment]) {
      const m = /^c(\d+)$/.exec(key || '');
      if (m) wanted.set(Number(m[1]), it.service);
    }
  }
  const out = new Map();
  const byService = new Set(wanted.values());
  await Promise.all([...byService].map(async (service) => {
    try {
      const deps = await api(`/deployments?service=${encodeURIComponent(service)}&limit=1000`);
      for (const d of deps) if (wanted.has(d.id)) out.set(d.id, d);
    } catch {
      // Without the map the ids are still shown, only not linked.
    }
  }));
  return out;
}

function depLink(key, links, name) {
  const m = /^c(\d+)$/.exec(key || '');
  const dep = m ? links.get(Number(m[1])) : null;
  if (dep && dep.release) {
    return h('a', {href: `/releases/${dep.release}`,
      title: `deployment ${dep.id} of release ${dep.release} to ${dep.environment}`}, name || key);
  }
  return h('span', {class: 'mono'}, name || key);
}

function idCell(it, links) {
  if (it.kind === 'release') return h('a', {href: `/releases/${it.id}`}, `release ${it.id}`);
  // `id` names an item as people know it (an imported one by its own id); `ref` is what
  // Conveyor knows it by: incidents' record numbers, a deployment's fact key (c<number>).
  const ref = it.ref || it.id;
  if (it.kind === 'incident' || (it.kind === 'failure' && /^\d+(\+\d+)*$/.test(ref))) {
    const names = it.id.split('+');
    return ref.split('+').flatMap((id, i) => [i ? ' + ' : null,
      h('a', {href: `/incidents?id=${id}`}, `incident ${names[i] || id}`)]);
  }
  if (it.kind === 'commit') {
    return [h('span', {class: 'sha', title: it.id}, it.id.slice(0, 12)),
      it.deployment ? [' in ', depLink(it.deployment_ref || it.deployment, links, it.deployment)]
        : null];
  }
  return depLink(ref, links, it.id);
}

function valueOf(metric, it) {
  if (it.value === null || it.value === undefined) return '';
  if (['lead_time', 'recovery_time', 'incident_recovery'].includes(metric)) {
    // The exact seconds beside the rounded duration: a median can be recomputed.
    return `${fmtDuration(it.value)} (${general(it.value)} s)`;
  }
  return general(it.value);
}
