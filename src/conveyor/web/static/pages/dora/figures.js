// Figures and dates as people read them on the DORA page: the same rules as cli/dora.py's
// show() and plural(), so the page and the terminal agree.

/** Python's round(): halves go to the even neighbour. */
function roundHalfEven(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Python's f"{x:.{digits}f}": toFixed, except that an exact tie rounds to even. */
export function fixed(x, digits) {
  const exact = Math.abs(x).toFixed(Math.min(100, digits + 30));
  const tail = exact.slice(exact.indexOf('.') + 1 + digits);
  if (/^50*$/.test(tail)) {
    const scaled = roundHalfEven(Math.abs(x) * 10 ** digits) / 10 ** digits;
    return (x < 0 ? '-' : '') + scaled.toFixed(digits);
  }
  return x.toFixed(digits);
}

/** Python's f"{n:g}" for the small numbers shown here. */
export function general(n) {
  return Number.isInteger(n) ? String(n) : String(Number(n.toPrecision(6)));
}

/** "3d 4h", "5h 12m", "47m", "30s": two units at most (metrics.dora_options.fmt_duration). */
export function fmtDuration(seconds) {
  const s = roundHalfEven(seconds);
  for (const [unit, size, sub, subsize] of [['d', 86400, 'h', 3600], ['h', 3600, 'm', 60]]) {
    if (s >= size) {
      const rest = Math.floor((s % size) / subsize);
      return `${Math.floor(s / size)}${unit}` + (rest ? ` ${rest}${sub}` : '');
    }
  }
  return s >= 60 ? `${Math.floor(s / 60)}m` : `${s}s`;
}

export function plural(n, word) {
  return `${general(n)} ${word}` + (n === 1 ? '' : 's');
}

/** A figure's value as a person reads it. */
export function show(metric, value) {
  if (value === null || value === undefined) return '-';
  if (['lead_time', 'recovery_time', 'incident_recovery'].includes(metric)) {
    return fmtDuration(value);
  }
  if (metric === 'change_failure_rate' || metric === 'rework_rate') {
    return `${fixed(value * 100, 1)} %`;
  }
  if (metric === 'caught_before_traffic') return plural(value, 'deployment');
  if (metric === 'deployment_frequency') return `${fixed(value, 2)} / week`;
  if (metric === 'batch_size') return plural(value, 'commit');
  return plural(value, 'release');
}

export function percent0(share) {
  return `${fixed(share * 100, 0)}%`;
}

export function capital(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : '';
}

// --- dates ----------------------------------------------------------------------------------

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function parseDay(iso) {
  const [y, m, d] = iso.split('-').map(Number);
  return new Date(Date.UTC(y, m - 1, d));
}

function dayIso(date) {
  return date.toISOString().slice(0, 10);
}

/** The last day of a window or bucket that ends (excluded) on `endIso`. */
export function lastDay(endIso) {
  return dayIso(new Date(parseDay(endIso).getTime() - 86400000));
}

export function shortLabel(startIso, by) {
  const d = parseDay(startIso);
  return by === 'month' ? `${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()}`
    : `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}`;
}

export function bucketLabel(row) {
  const last = lastDay(row.end);
  return last === row.start ? row.start : `${row.start} – ${last}`;
}

/** An RFC 3339 time as "YYYY-MM-DD HH:MM" in the report's time zone. */
export function localTime(iso, zone) {
  if (!iso) return '';
  const parts = new Intl.DateTimeFormat('en-CA', {
    timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit',
    minute: '2-digit', hourCycle: 'h23',
  }).formatToParts(new Date(iso));
  const p = Object.fromEntries(parts.map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}`;
}
