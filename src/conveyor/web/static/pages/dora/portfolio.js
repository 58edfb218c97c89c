// Services side by side on the DORA page: GET /api/v1/dora/portfolio for the page's window, of
// every service or of a team (GET /api/v1/teams fills the selector), one row per service with
// the five figures and its tier, and the aggregate as the last row. Figures are written as
// `conveyor dora --by-service` writes them (pages/dora/figures.js).

import {h, replace, clear, empty, errorBox} from '../../lib/dom.js';
import {show} from './figures.js';

const FIVE = [['deployment_frequency', 'Deployment frequency'], ['lead_time', 'Lead time'],
  ['change_failure_rate', 'Change failure rate'], ['recovery_time', 'Recovery time'],
  ['rework_rate', 'Rework rate']];

/** The section; `onTeam(name)` is called when someone picks a team ('' for every service). */
export function portfolioSection({api, onTeam}) {
  let teams = [];
  let seq = 0;
  const teamSel = h('select', {id: 'dora-team', name: 'team',
    onchange: (e) => onTeam(e.target.value)});
  const status = h('div', {class: 'dora-status', role: 'status', 'aria-live': 'polite'});
  // On a phone the table scrolls sideways in this box: a tab stop, so the keyboard scrolls it.
  const table = h('div', {class: 'table-wrap portfolio', tabindex: '0', role: 'region',
    'aria-labelledby': 'dora-portfolio'});
  const el = h('section', {class: 'dora-section', 'aria-labelledby': 'dora-portfolio'},
    h('h2', {id: 'dora-portfolio'}, 'Portfolio'),
    h('div', {class: 'dora-filters portfolio-filters'},
      h('div', {class: 'field'}, h('label', {for: 'dora-team'}, 'Team'), teamSel)),
    h('p', {class: 'subtle'}, 'Each service side by side: its five figures over the same ' +
      'window, and all of them together; a service\'s tier is the lowest of its figures\' tiers. ',
    h('a', {href: '/teams'}, 'Teams'), ' are made and changed on their own page.'),
    status, table);

  function drawTeams(chosen) {
    const names = [...new Set([...teams.map((t) => t.name), ...(chosen ? [chosen] : [])])];
    replace(teamSel, h('option', {value: ''}, 'All services'),
      names.sort().map((n) => h('option', {value: n}, n)));
    teamSel.value = chosen;
  }

  async function load(query, team) {
    const mine = ++seq;
    drawTeams(team);
    try {
      const data = await api(`/dora/portfolio${query ? `?${query}` : ''}`);
      if (mine !== seq) return;
      clear(status);
      replace(table, draw(data));
    } catch (err) {
      if (mine !== seq) return;
      clear(table);
      replace(status, errorBox(err, 'The services could not be compared'));
    }
  }

  api('/teams').then((list) => {
    teams = list || [];
    drawTeams(teamSel.value);
  }).catch(() => {
    // Without the list, the team of the URL (if any) is still offered.
  });
  return {el, load};
}

function draw(data) {
  if (!data.services.length) {
    return empty('No service has deployments or incidents in this window.');
  }
  const who = data.team ? `Team ${data.team}` : 'All services';
  return h('table', {class: 'portfolio-table'},
    h('caption', null, `${who}: ${data.services.length} ` +
      `service${data.services.length === 1 ? '' : 's'}, ${data.scope.env_tier}`),
    h('thead', null, h('tr', null, h('th', {scope: 'col'}, 'Service'),
      FIVE.map(([, title]) => h('th', {scope: 'col', class: 'num'}, title)),
      h('th', {scope: 'col'}, 'Tier'))),
    h('tbody', null, data.services.map((entry) => row(entry.service, entry))),
    h('tfoot', null, row(who, data.aggregate, true)));
}

function row(name, entry, total = false) {
  return h('tr', {class: total ? 'portfolio-total' : null,
    dataset: {service: total ? '' : name}},
  h('th', {scope: 'row'}, name),
  FIVE.map(([key]) => {
    const fig = entry.metrics[key];
    return h('td', {class: ['num', fig.tier ? `tier-${fig.tier}` : 'tier-none'],
      dataset: {metric: key}, title: fig.tier ? `tier: ${fig.tier}` : 'no tier'},
    show(key, fig.value));
  }),
  h('td', {class: ['portfolio-tier', entry.tier ? `tier-${entry.tier}` : 'tier-none']},
    entry.tier || 'no tier'));
}
