// Each DORA card's one-sentence definition, in docs/metrics.md's words (the headline of each
// metric's section there); the report's own `definition` (shown behind a number) is the exact
// rule, too long for a card. Why a figure has no value, from the figure's own counts.

import {plural} from './figures.js';

export const DEFINITIONS = {
  deployment_frequency: 'Successful deployments finished in the window, per week; rollbacks ' +
    'are not counted.',
  lead_time: 'Per commit: from its commit time to the end of the first successful deployment ' +
    'of its service that brought it.',
  change_failure_rate: 'Deployments that served users and then needed intervention, out of ' +
    'all deployments that served users in the window.',
  recovery_time: 'Per change failure: from its detection to restored service.',
  rework_rate: 'Unplanned deployments (made because of a production failure), out of all ' +
    'deployments that served users in the window.',
  batch_size: 'Commits per successful deployment in the window: the commits that counted for ' +
    'lead time.',
  caught_before_traffic: 'Deployments stopped by their checks before taking production ' +
    'traffic: the checks doing their job, not change failures.',
  incident_recovery: 'Per incident no deployment is blamed for: from its opening to restored ' +
    'service.',
  work_in_progress: 'Releases built but not yet in the tier, now: a snapshot, not a window.',
};

/** Why figure `name` has no value (null), in a few words. */
export function reasonOf(name, fig) {
  const pending = (n, what) => `${plural(n, what)} not restored yet, none restored to measure`;
  switch (name) {
    case 'lead_time':
    case 'batch_size':
      return 'no commit was deployed in this window';
    case 'change_failure_rate':
    case 'rework_rate':
      return 'no deployment served users in this window';
    case 'recovery_time':
      return fig.not_restored ? pending(fig.not_restored, 'failure')
        : 'no change failure in this window: nothing to recover from';
    case 'incident_recovery':
      return fig.not_restored ? pending(fig.not_restored, 'incident')
        : 'no incident without a deployment to blame in this window';
    default:
      return 'nothing to measure in this window';
  }
}
