// The mor-ts playground: streams a completion from /v1/completions and colours every token by
// the number of recursions (depth) the router gave it. Compare mode runs the same prompt and
// seed at two max depths side by side.
import { getJson, postStream, getApiKey, setApiKey, ApiError } from './api.js';

const $ = (id) => document.getElementById(id);

const ui = {
  model: $('model'),
  modelDesc: $('model-desc'),
  apiKeyRow: $('apikey-row'),
  apiKey: $('apikey'),
  form: $('form'),
  prompt: $('prompt'),
  temperature: $('temperature'),
  topP: $('top_p'),
  topK: $('top_k'),
  maxTokens: $('max_tokens'),
  seed: $('seed'),
  maxDepth: $('max_depth'),
  maxDepthOut: $('max_depth_out'),
  thresholdRow: $('threshold-row'),
  threshold: $('threshold'),
  thresholdOut: $('threshold_out'),
  compare: $('compare'),
  depthBRow: $('depth_b-row'),
  depthB: $('depth_b'),
  depthBOut: $('depth_b_out'),
  generate: $('generate'),
  stop: $('stop'),
  status: $('status'),
  error: $('error'),
  legend: $('legend'),
  columns: $('columns'),
  template: $('column-template'),
};

/** @type {Array<{id: string, context_length?: number, mor?: {num_recursions: number, routing: string|null, threshold: number|null}}>} */
let models = [];
let controller = null;

function currentModel() {
  return models.find((m) => m.id === ui.model.value) ?? models[0];
}

function numRecursions() {
  const n = currentModel()?.mor?.num_recursions;
  return Number.isInteger(n) && n > 0 ? n : 1;
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

function setState(state, text) {
  document.body.dataset.state = state;
  ui.status.textContent = text ?? '';
}

// ---- model info -------------------------------------------------------------------------

async function loadModels() {
  ui.modelDesc.textContent = 'loading…';
  try {
    const list = await getJson('/v1/models');
    models = Array.isArray(list.data) ? list.data : [];
    ui.model.replaceChildren(...models.map((m) => new Option(m.id, m.id)));
    if (models.length === 0) throw new Error('the server lists no models');
    showError('');
    applyModel();
  } catch (err) {
    if (err instanceof ApiError && err.status === 503) {
      // the server listens before the model is loaded: ask again shortly
      ui.modelDesc.textContent = err.body?.error?.message ?? 'the model is loading…';
      setTimeout(loadModels, 500);
    } else if (err instanceof ApiError && err.status === 401) {
      ui.apiKeyRow.hidden = false;
      ui.modelDesc.textContent = '';
      showError(getApiKey() ? 'The API key was refused.' : 'This server needs an API key.');
      ui.apiKey.focus();
    } else {
      ui.modelDesc.textContent = '';
      showError(`Could not list models: ${err.message}`);
    }
  }
}

function applyModel() {
  const m = currentModel();
  const nr = numRecursions();
  const routing = m?.mor?.routing ?? null;
  const desc =
    routing === 'expert_choice'
      ? `expert-choice routing, threshold ${fmt(m.mor.threshold, 2)}`
      : routing === 'token_choice'
        ? 'token-choice routing'
        : 'plain recursive model (every token runs every recursion)';
  ui.modelDesc.textContent = `${nr} recursion${nr === 1 ? '' : 's'} · ${desc}`;
  for (const [range, out, value] of [
    [ui.maxDepth, ui.maxDepthOut, nr],
    [ui.depthB, ui.depthBOut, 1],
  ]) {
    range.max = String(nr);
    range.value = String(value);
    out.value = String(value);
  }
  const expert = routing === 'expert_choice';
  ui.thresholdRow.hidden = !expert;
  if (expert && typeof m.mor.threshold === 'number') {
    ui.threshold.value = String(m.mor.threshold);
    ui.thresholdOut.value = fmt(m.mor.threshold, 2);
  }
  const ctx = m?.context_length;
  if (Number.isInteger(ctx) && ctx > 0) {
    ui.maxTokens.max = String(ctx);
    if (Number(ui.maxTokens.value) > ctx) ui.maxTokens.value = String(ctx);
  }
  renderLegend(nr);
}

function renderLegend(nr) {
  const items = [];
  for (let d = 1; d <= nr; d++) {
    const s = document.createElement('span');
    s.className = `tok d${d}`;
    s.textContent = `depth ${d}`;
    items.push(s);
  }
  const label = document.createElement('span');
  label.className = 'muted';
  label.textContent = 'recursions per token:';
  ui.legend.replaceChildren(label, ...items);
}

// ---- one output column ------------------------------------------------------------------

class Column {
  constructor(title, maxDepth, nr) {
    this.maxDepth = maxDepth;
    this.nr = nr;
    this.el = ui.template.content.firstElementChild.cloneNode(true);
    this.el.dataset.maxDepth = String(maxDepth);
    this.el.querySelector('.col-title').textContent = title;
    this.out = this.el.querySelector('.output');
    this.hist = this.el.querySelector('.histogram');
    this.counts = new Array(nr + 1).fill(0);
    this.tokens = 0;
    this.tStart = performance.now();
    this.tFirst = null;
    this.tLast = null;
    this.bars = [];
    for (let d = 1; d <= nr; d++) {
      const row = document.createElement('div');
      row.className = 'hrow';
      row.dataset.depth = String(d);
      row.innerHTML = `<span class="hlabel">d${d}</span><span class="htrack"><span class="bar d${d}"></span></span><span class="count">0</span>`;
      if (d > maxDepth) row.classList.add('capped');
      this.hist.append(row);
      this.bars.push(row);
    }
  }

  /**
   * Append a streamed piece: one span per token that completed it. `lp` is the chunk's
   * logprobs object (requested with logprobs: 0): its per-token texts split the piece exactly
   * when they add up to it, and each token's log-probability goes into its tooltip.
   */
  addPiece(text, depths, lp) {
    if (!text && depths.length === 0) return;
    if (this.tFirst === null && depths.length > 0) this.tFirst = performance.now();
    if (depths.length === 0) {
      this.out.append(text); // text without a token of its own (e.g. a flushed tail)
      return;
    }
    const texts = splitPiece(text, depths.length, lp?.tokens);
    depths.forEach((d, i) => {
      const span = document.createElement('span');
      const depth = Number.isInteger(d) && d >= 1 ? d : 1;
      span.className = `tok d${Math.min(depth, 8)}`;
      span.dataset.depth = String(depth);
      const logprob = lp?.token_logprobs?.[i];
      span.title = `depth ${depth}${typeof logprob === 'number' ? ` · logprob ${logprob.toFixed(2)}` : ''}`;
      span.textContent = texts[i];
      this.out.append(span);
      if (depth < this.counts.length) this.counts[depth]++;
      this.tokens++;
    });
    this.tLast = performance.now();
    this.render();
  }

  render(mean) {
    const max = Math.max(1, ...this.counts);
    for (let d = 1; d <= this.nr; d++) {
      const row = this.bars[d - 1];
      row.querySelector('.bar').style.width = `${(100 * this.counts[d]) / max}%`;
      row.querySelector('.count').textContent = String(this.counts[d]);
    }
    const q = (c) => this.el.querySelector(c);
    q('.s-tokens').textContent = String(this.tokens);
    if (this.tFirst !== null) q('.s-ttft').textContent = `${Math.round(this.tFirst - this.tStart)} ms`;
    if (this.tFirst !== null && this.tLast !== null && this.tokens > 1 && this.tLast > this.tFirst) {
      q('.s-tps').textContent = fmt(((this.tokens - 1) * 1000) / (this.tLast - this.tFirst), 1);
    }
    let meanDepth = mean;
    if (typeof meanDepth !== 'number' && this.tokens > 0) {
      meanDepth = this.counts.reduce((s, c, d) => s + c * d, 0) / this.tokens;
    }
    if (typeof meanDepth === 'number') q('.s-mean').textContent = fmt(meanDepth, 2);
  }

  finish(reason, mean) {
    this.el.dataset.finish = reason;
    this.el.querySelector('.s-finish').textContent = reason;
    this.render(mean);
  }
}

/**
 * The piece's text as `n` token texts: the server's per-token texts when they add up to the
 * piece; otherwise (a character that took several byte-level tokens) its characters shared
 * out evenly, so that every token still has a span of its own.
 */
function splitPiece(text, n, tokenTexts) {
  if (n === 1) return [text];
  if (Array.isArray(tokenTexts) && tokenTexts.length === n && tokenTexts.join('') === text) return tokenTexts;
  const chars = Array.from(text);
  const out = [];
  let at = 0;
  for (let i = 0; i < n; i++) {
    const take = i === n - 1 ? chars.length - at : Math.floor(chars.length / n);
    out.push(chars.slice(at, at + take).join(''));
    at += take;
  }
  return out;
}

// ---- generation -------------------------------------------------------------------------

function num(input) {
  const v = input.valueAsNumber;
  return Number.isFinite(v) ? v : undefined;
}

function requestBody(maxDepth) {
  const m = currentModel();
  const body = {
    model: m.id,
    prompt: ui.prompt.value,
    max_tokens: num(ui.maxTokens),
    temperature: num(ui.temperature),
    top_p: num(ui.topP),
    top_k: num(ui.topK),
    seed: num(ui.seed),
    stream: true,
    logprobs: 0, // per-token texts and log-probabilities, for the token spans
    mor: { max_depth: maxDepth },
  };
  if (m?.mor?.routing === 'expert_choice') body.mor.threshold = num(ui.threshold);
  for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
  return body;
}

async function runColumn(col, signal) {
  try {
    await postStream(
      '/v1/completions',
      requestBody(col.maxDepth),
      (chunk) => {
        const choice = chunk.choices?.[0];
        if (!choice) return;
        col.addPiece(choice.text ?? '', choice.mor?.depths ?? [], choice.logprobs);
        if (choice.finish_reason) col.finish(choice.finish_reason, choice.mor?.mean_depth);
      },
      signal,
    );
    if (!col.el.dataset.finish) col.finish('ended');
  } catch (err) {
    if (signal.aborted) {
      col.finish('stopped');
      return;
    }
    col.finish('error');
    throw err;
  }
}

async function generate() {
  if (controller || models.length === 0) return;
  showError('');
  const nr = numRecursions();
  const a = Number(ui.maxDepth.value);
  const specs = ui.compare.checked ? [a, Number(ui.depthB.value)] : [a];
  const cols = specs.map((d) => new Column(`max depth ${d}`, d, nr));
  ui.columns.classList.toggle('compare', cols.length > 1);
  ui.columns.replaceChildren(...cols.map((c) => c.el));
  controller = new AbortController();
  const signal = controller.signal;
  ui.generate.disabled = true;
  ui.stop.disabled = false;
  setState('running', 'generating…');
  const results = await Promise.allSettled(cols.map((c) => runColumn(c, signal)));
  controller = null;
  ui.generate.disabled = false;
  ui.stop.disabled = true;
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) {
    const err = failed.reason;
    showError(err instanceof Error ? err.message : String(err));
    setState('error', 'failed');
    if (err instanceof ApiError && err.status === 401) ui.apiKeyRow.hidden = false;
  } else {
    setState(signal.aborted ? 'stopped' : 'done', signal.aborted ? 'stopped' : 'done');
  }
}

function fmt(x, digits) {
  return typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '–';
}

// ---- wiring -----------------------------------------------------------------------------

ui.form.addEventListener('submit', (e) => {
  e.preventDefault();
  generate();
});
ui.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    generate();
  }
});
ui.stop.addEventListener('click', () => controller?.abort());
ui.model.addEventListener('change', applyModel);
ui.maxDepth.addEventListener('input', () => (ui.maxDepthOut.value = ui.maxDepth.value));
ui.depthB.addEventListener('input', () => (ui.depthBOut.value = ui.depthB.value));
ui.threshold.addEventListener('input', () => (ui.thresholdOut.value = fmt(Number(ui.threshold.value), 2)));
ui.compare.addEventListener('change', () => (ui.depthBRow.hidden = !ui.compare.checked));
ui.apiKey.value = getApiKey();
ui.apiKey.addEventListener('change', () => {
  setApiKey(ui.apiKey.value.trim());
  loadModels();
});

setState('idle');
loadModels();
