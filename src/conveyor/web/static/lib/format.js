// Times, durations and shas as people read them. Times from the API are ISO 8601 strings.

function toDate(value) {
  if (value === null || value === undefined || value === '') return null;
  const d = value instanceof Date ? value : new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** The short name of the browser's time zone at `d` ("UTC", "CET", "GMT+2"), or "". */
function zoneName(d) {
  const zone = new Intl.DateTimeFormat('en', {timeZoneName: 'short'}).formatToParts(d)
    .find((part) => part.type === 'timeZoneName');
  return zone ? zone.value : '';
}

function localParts(d) {
  const pad = (n) => String(n).padStart(2, '0');
  return {
    date: `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`,
    minutes: `${pad(d.getHours())}:${pad(d.getMinutes())}`,
    seconds: pad(d.getSeconds()),
  };
}

/** "2026-11-26 09:58:03 UTC": the local time with its zone, never a bare clock reading. */
export function absTime(value) {
  const d = toDate(value);
  if (!d) return '';
  const {date, minutes, seconds} = localParts(d);
  return `${date} ${minutes}:${seconds} ${zoneName(d)}`.trim();
}

/** "2026-11-26 09:58 UTC": as absTime, to the minute (shown beside a relative time). */
export function absMinute(value) {
  const d = toDate(value);
  if (!d) return '';
  const {date, minutes} = localParts(d);
  return `${date} ${minutes} ${zoneName(d)}`.trim();
}

/** "just now", "5 min ago", "3 h ago", "2 days ago", "in 4 min". */
export function relTime(value, now = Date.now()) {
  const d = toDate(value);
  if (!d) return '';
  const seconds = Math.round((now - d.getTime()) / 1000);
  const future = seconds < 0;
  const s = Math.abs(seconds);
  let text;
  if (s < 45) return future ? 'in a moment' : 'just now';
  if (s < 3600) text = `${Math.round(s / 60)} min`;
  else if (s < 86400) text = `${Math.round(s / 3600)} h`;
  else if (s < 86400 * 45) {
    const days = Math.round(s / 86400);
    text = `${days} day${days === 1 ? '' : 's'}`;
  } else {
    const months = Math.round(s / (86400 * 30));
    text = `${months} month${months === 1 ? '' : 's'}`;
  }
  return future ? `in ${text}` : `${text} ago`;
}

/** A <time> element: the relative time, then the absolute one with its zone (to the minute;
    to the second on hover), so a screenshot or a printout still says when. */
export function timeEl(value) {
  const d = toDate(value);
  const el = document.createElement('time');
  if (!d) {
    el.textContent = '—';
    return el;
  }
  el.dateTime = d.toISOString();
  el.title = absTime(d);
  el.append(relTime(d), ' ');
  const exact = document.createElement('span');
  exact.className = 'time-abs';
  exact.textContent = `(${absMinute(d)})`;
  el.append(exact);
  return el;
}

/** Seconds → "0.4 s", "42 s", "3 min 5 s", "1 h 3 min", "2 days 4 h". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return '—';
  let s = Number(seconds);
  if (s < 0) s = 0;
  if (s < 10) return `${Math.round(s * 10) / 10} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const total = Math.round(s);
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  if (days > 0) return hours ? `${days} day${days === 1 ? '' : 's'} ${hours} h` : `${days} day${days === 1 ? '' : 's'}`;
  if (hours > 0) return minutes ? `${hours} h ${minutes} min` : `${hours} h`;
  return secs ? `${minutes} min ${secs} s` : `${minutes} min`;
}

/** Seconds between two times (end defaults to now), or null. */
export function between(start, end) {
  const a = toDate(start);
  if (!a) return null;
  const b = toDate(end) || new Date();
  return (b.getTime() - a.getTime()) / 1000;
}

/** The first 7 characters of a commit sha. */
export function shortSha(sha) {
  return sha ? String(sha).slice(0, 7) : '';
}

/** The first line of a commit message. */
export function firstLine(text) {
  return text ? String(text).split('\n', 1)[0] : '';
}

/** 1234 → "1,234"; fractions to at most `digits` places. */
export function number(value, digits = 2) {
  if (value === null || value === undefined) return '—';
  return Number(value).toLocaleString('en', {maximumFractionDigits: digits});
}

/** 0.123 → "12.3 %". */
export function percent(ratio, digits = 1) {
  if (ratio === null || ratio === undefined) return '—';
  return `${(Number(ratio) * 100).toFixed(digits)} %`;
}

/** The UI path of one environment of one service. */
export function envPath(service, env) {
  return `/services/${encodeURIComponent(service)}/environments/${encodeURIComponent(env)}`;
}
