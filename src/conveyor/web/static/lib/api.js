// The one way pages talk to the server: /api/v1 with the session cookie and the CSRF header.

export class ApiError extends Error {
  constructor(status, message, hint = null, code = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.hint = hint;
    this.code = code;
  }
}

/**
 * fetch('/api/v1' + path) and parse the JSON answer. `body` (an object) is sent as JSON.
 * Rejects with ApiError built from the API's {"error": {code, message, hint}} body.
 */
export async function api(path, {method = 'GET', body, signal, headers} = {}) {
  const init = {
    method,
    credentials: 'same-origin',
    // A cross-site form cannot set a custom header: the server requires it with the cookie.
    headers: {'Accept': 'application/json', 'X-Conveyor-CSRF': '1', ...(headers || {})},
    signal,
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch('/api/v1' + path, init);
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'the server could not be reached', 'check that `conveyor server` is running');
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const e = (data && data.error) || {};
    const message = e.message || (data && typeof data.detail === 'string' && data.detail) ||
      `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message, e.hint || null, e.code || null);
  }
  return data;
}
