// The DORA page's view (service, range, bucket, and the team of the portfolio) in the URL
// query, under the API's own parameter names, so a link reproduces it and maps one-to-one onto
// the API calls.

export const PRESETS = [['30d', 'Last 30 days'], ['90d', 'Last 90 days'],
  ['180d', 'Last 180 days'], ['365d', 'Last 365 days']];
export const DEFAULT_SINCE = '90d';
export const BUCKETS = [['week', 'Week'], ['day', 'Day'], ['month', 'Month']];
// Parameters the page has no control for but passes on from a link (docs/metrics.md).
const PASS_THROUGH = ['env_tier', 'tz', 'week_start', 'lead_time_from', 'tiers', 'look_back',
  'attribution_window'];

export function viewOf(query) {
  const view = {
    service: query.get('service') || '',
    since: query.get('since') || '',
    from: query.get('from') || '',
    to: query.get('to') || '',
    by: query.get('by') || 'week',
    team: query.get('team') || '',
    extra: {},
  };
  for (const key of PASS_THROUGH) {
    if (query.get(key)) view.extra[key] = query.get(key);
  }
  return view;
}

/** The query of the URL; of GET /dora without the team, of GET /dora/portfolio without the
 * service (queryOf({...view, team: ''}) and queryOf({...view, service: ''})). */
export function queryOf(view, {explain = false} = {}) {
  const q = new URLSearchParams();
  if (view.service) q.set('service', view.service);
  if (view.from) {
    q.set('from', view.from);
    if (view.to) q.set('to', view.to);
  } else if (view.since && view.since !== DEFAULT_SINCE) {
    q.set('since', view.since);
  }
  if (view.by && view.by !== 'week') q.set('by', view.by);
  if (view.team) q.set('team', view.team);
  for (const [k, v] of Object.entries(view.extra)) q.set(k, v);
  if (explain) q.set('explain', 'true');
  return q.toString();
}
