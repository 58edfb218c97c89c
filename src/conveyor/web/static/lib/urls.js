// URLs that come from elsewhere (a query string, a pipeline file, a target): checked before
// the page navigates to one or makes it a link. No DOM here, so a test can run it in Node.

// Browsers drop tab, CR and LF from a URL and read a backslash as a slash, so '/\t/evil.example'
// is '//evil.example', another site. Spaces and other invisible characters have no place in a
// path of ours either. The server's safe_next (server/web_ui.py) applies the same rules.
const UNSAFE = /[\s\x00-\x1f\x7f-\x9f\\\ufeff]/u;
const BAD_ESCAPE = /%(?![0-9A-Fa-f]{2})/;

/** Where to go after signing in: `value` if it is a path on this site (`origin`), else '/'. */
export function safeNext(value, origin = location.origin) {
  if (typeof value !== 'string' || value === '' || BAD_ESCAPE.test(value)) return '/';
  let decoded;
  try {
    decoded = decodeURIComponent(value);
  } catch {
    return '/';
  }
  for (const form of [value, decoded]) {
    if (!form.startsWith('/') || form.startsWith('//') || UNSAFE.test(form)) return '/';
  }
  let url;
  try {
    url = new URL(value, origin);
  } catch {
    return '/';
  }
  if (url.origin !== origin) return '/';
  if (url.pathname === '/signin' || url.pathname.startsWith('/signin/')) return '/';
  return url.pathname + url.search + url.hash;
}

/** `value` as a link target if it is an absolute http(s) URL, else null (show it as text). */
export function httpHref(value) {
  if (typeof value !== 'string' || UNSAFE.test(value.trim())) return null;
  let url;
  try {
    url = new URL(value.trim());
  } catch {
    return null;
  }
  return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
}
