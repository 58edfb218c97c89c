// ANSI escape sequences in log lines → DOM nodes. Log text is untrusted: it only ever becomes
// text nodes and <span>s with our own classes and colour styles, never markup.
//
// Supported: SGR (ESC[...m) with reset, bold, dim, italic, underline, inverse, strike, the 8/16
// colours (classes ansi-fg-N / ansi-bg-N, themed by the page's CSS), the 256-colour palette and
// truecolor (inline rgb()). Every other escape sequence (cursor moves, OSC titles and links) is
// dropped; a carriage return keeps only what a terminal would finally show (progress bars).

// CSI (ESC [ params intermediates final), OSC (ESC ] ... BEL or ST), and two-byte escapes.
const ESCAPE = /\x1b\[([0-?]*)[ -/]*([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]?|\r/g;
// C0 controls other than tab, and DEL: invisible in a terminal, noise on a page.
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/g;

const CUBE = [0, 95, 135, 175, 215, 255];

/** The rgb() of a 256-palette index from 16 up (0–15 are themed by CSS classes). */
export function paletteRgb(n) {
  if (n >= 232) {
    const v = 8 + 10 * (n - 232);
    return `rgb(${v}, ${v}, ${v})`;
  }
  const i = n - 16;
  return `rgb(${CUBE[Math.floor(i / 36)]}, ${CUBE[Math.floor(i / 6) % 6]}, ${CUBE[i % 6]})`;
}

function emptyStyle() {
  return {fg: null, bg: null, bold: false, dim: false, italic: false, underline: false,
    inverse: false, strike: false};
}

function byte(value) {
  const n = Number(value);
  return Number.isInteger(n) && n >= 0 && n <= 255 ? n : null;
}

// 38/48 take either `5;n` or `2;r;g;b`, as separate parameters or colon sub-parameters.
function extendedColour(params, i) {
  const mode = params[i + 1];
  if (mode === 5) {
    const n = byte(params[i + 2]);
    return [n === null ? null : n, i + 2];
  }
  if (mode === 2) {
    const [r, g, b] = [params[i + 2], params[i + 3], params[i + 4]].map(byte);
    const colour = r === null || g === null || b === null ? null : `rgb(${r}, ${g}, ${b})`;
    return [colour, i + 4];
  }
  return [null, i + 1];
}

function applySgr(style, raw) {
  // Colon sub-parameters (38:2::r:g:b) carry an optional colour-space id we do not need.
  const params = [];
  for (const part of (raw === '' ? '0' : raw).split(';')) {
    if (part.includes(':')) {
      const sub = part.split(':').map((p) => (p === '' ? null : Number(p)));
      if (sub[1] === 2 && sub.length >= 6) sub.splice(2, 1);
      params.push(...sub.filter((p) => p !== null));
    } else {
      params.push(part === '' ? 0 : Number(part));
    }
  }
  for (let i = 0; i < params.length; i++) {
    const p = params[i];
    if (p === 0) Object.assign(style, emptyStyle());
    else if (p === 1) style.bold = true;
    else if (p === 2) style.dim = true;
    else if (p === 3) style.italic = true;
    else if (p === 4 || p === 21) style.underline = true;
    else if (p === 7) style.inverse = true;
    else if (p === 9) style.strike = true;
    else if (p === 22) style.bold = style.dim = false;
    else if (p === 23) style.italic = false;
    else if (p === 24) style.underline = false;
    else if (p === 27) style.inverse = false;
    else if (p === 29) style.strike = false;
    else if (p >= 30 && p <= 37) style.fg = p - 30;
    else if (p === 38) [style.fg, i] = extendedColour(params, i);
    else if (p === 39) style.fg = null;
    else if (p >= 40 && p <= 47) style.bg = p - 40;
    else if (p === 48) [style.bg, i] = extendedColour(params, i);
    else if (p === 49) style.bg = null;
    else if (p >= 90 && p <= 97) style.fg = p - 90 + 8;
    else if (p >= 100 && p <= 107) style.bg = p - 100 + 8;
  }
}

/**
 * Split a line into styled segments: [{text, style}], style as in emptyStyle() with fg/bg a
 * palette index (0–255), an "rgb(...)" string, or null for the default.
 */
export function parseAnsi(line) {
  let segments = [];
  const style = emptyStyle();
  const push = (text) => {
    text = text.replace(CONTROL, '');
    if (!text) return;
    const last = segments[segments.length - 1];
    if (last && sameStyle(last.style, style)) last.text += text;
    else segments.push({text, style: {...style}});
  };
  const source = String(line ?? '');
  let at = 0;
  ESCAPE.lastIndex = 0;
  for (let m = ESCAPE.exec(source); m; m = ESCAPE.exec(source)) {
    push(source.slice(at, m.index));
    at = ESCAPE.lastIndex;
    if (m[0] === '\r') {
      // A terminal would overwrite the line from its start; a trailing \r (CRLF) changes nothing.
      if (!/^[\r\n]*$/.test(source.slice(at))) segments = [];
    } else if (m[2] === 'm') {
      applySgr(style, m[1]);
    }
  }
  push(source.slice(at));
  return segments;
}

function sameStyle(a, b) {
  for (const key of Object.keys(a)) if (a[key] !== b[key]) return false;
  return true;
}

/** The line as a terminal would show it, without any styling (for search and copying). */
export function stripAnsi(line) {
  return parseAnsi(line).map((s) => s.text).join('');
}

function colourOf(value, kind, classes, css) {
  if (value === null) return;
  if (typeof value === 'number' && value < 16) classes.push(`ansi-${kind}-${value}`);
  else css[kind === 'fg' ? 'color' : 'background-color'] =
    typeof value === 'number' ? paletteRgb(value) : value;
}

/** A DocumentFragment of text nodes and styled <span>s for one log line. */
export function ansiToFragment(line) {
  const fragment = document.createDocumentFragment();
  for (const {text, style} of parseAnsi(line)) {
    const classes = [];
    const css = {};
    let {fg, bg} = style;
    if (style.inverse) {
      // Swapping a default colour needs the log's own colours: classes the CSS defines.
      [fg, bg] = [bg, fg];
      if (fg === null) classes.push('ansi-fg-inverse');
      if (bg === null) classes.push('ansi-bg-inverse');
    }
    colourOf(fg, 'fg', classes, css);
    colourOf(bg, 'bg', classes, css);
    if (style.bold) classes.push('ansi-bold');
    if (style.dim) classes.push('ansi-dim');
    if (style.italic) classes.push('ansi-italic');
    if (style.underline) classes.push('ansi-underline');
    if (style.strike) classes.push('ansi-strike');
    if (!classes.length && !Object.keys(css).length) {
      fragment.appendChild(document.createTextNode(text));
      continue;
    }
    const span = document.createElement('span');
    if (classes.length) span.className = classes.join(' ');
    for (const [prop, value] of Object.entries(css)) span.style.setProperty(prop, value);
    span.textContent = text;
    fragment.appendChild(span);
  }
  return fragment;
}
