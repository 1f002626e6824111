// Shared by the playground and the runs page: HTTP calls to the mor server and an SSE reader.

const KEY_STORAGE = 'mor-api-key';

export function getApiKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) ?? '';
  } catch {
    return '';
  }
}

export function setApiKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* storage unavailable: the key lives for this page only */
  }
}

/** An error with the server's OpenAI-style body, when there is one. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
  }
}

function headers(extra = {}) {
  const h = { ...extra };
  const key = getApiKey();
  if (key) h['Authorization'] = `Bearer ${key}`;
  return h;
}

async function failure(res) {
  let body = null;
  let message = `${res.status} ${res.statusText}`;
  try {
    body = await res.json();
    if (body && body.error && body.error.message) message = `${res.status}: ${body.error.message}`;
  } catch {
    /* not JSON */
  }
  return new ApiError(res.status, message, body);
}

export async function getJson(path, signal) {
  const res = await fetch(path, { headers: headers(), signal });
  if (!res.ok) throw await failure(res);
  return res.json();
}

/**
 * POST `body` and call `onEvent(json)` for every `data:` event of the text/event-stream reply,
 * until `data: [DONE]` or the end of the stream. Resolves when the stream ends.
 */
export async function postStream(path, body, onEvent, signal) {
  const res = await fetch(path, {
    method: 'POST',
    headers: headers({ 'Content-Type': 'application/json', Accept: 'text/event-stream' }),
    body: JSON.stringify(body),
    signal,
  });
  if (!res.ok) throw await failure(res);
  if (!res.body) throw new ApiError(res.status, 'the response has no body', null);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let data = [];
  let done = false;
  // One event = the `data:` lines up to a blank line (the SSE rules, minus event/id/retry,
  // which the completions stream does not use).
  const dispatch = () => {
    if (data.length === 0) return;
    const payload = data.join('\n');
    data = [];
    if (payload === '[DONE]') {
      done = true;
      return;
    }
    let json;
    try {
      json = JSON.parse(payload);
    } catch {
      throw new ApiError(res.status, `unreadable event: ${payload.slice(0, 200)}`, null);
    }
    if (json && json.error) throw new ApiError(res.status, json.error.message ?? 'stream error', json);
    onEvent(json);
  };
  try {
    while (!done) {
      const { value, done: end } = await reader.read();
      if (end) break;
      buffer += value;
      let nl;
      while (!done && (nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
        if (buffer[nl] === '\r' && nl === buffer.length - 1) break; // maybe the first half of \r\n
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer[nl] === '\r' && buffer[nl + 1] === '\n' ? 2 : 1));
        if (line === '') dispatch();
        else if (line.startsWith('data:')) data.push(line.slice(line[5] === ' ' ? 6 : 5));
        // comments (":…") and other fields are ignored
      }
    }
    if (!done) {
      if (buffer.startsWith('data:')) data.push(buffer.slice(buffer[5] === ' ' ? 6 : 5));
      dispatch();
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
