// Training runs: the metrics.jsonl of each run under the server's runs directory, as charts
// (uPlot): loss and validation NLL, learning rate, and the routers' per-recursion selected
// fraction (expert-choice) or load (token-choice).
import uPlot from './vendor/uplot/dist/uPlot.esm.js';
import { getJson, ApiError } from './api.js';

const ui = {
  run: document.getElementById('run'),
  desc: document.getElementById('run-desc'),
  reload: document.getElementById('reload'),
  error: document.getElementById('error'),
  charts: document.getElementById('charts'),
};

const COLORS = ['#2f5bd3', '#d1495b', '#2a9d8f', '#e9a23b', '#7b4fc9', '#3d8fd1', '#8c6d31', '#5a9e3a'];
let plots = [];
// steps are whole numbers: no ticks at 1.5
const STEP_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6];

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

function setState(state) {
  document.body.dataset.state = state;
}

async function loadRuns() {
  setState('loading');
  try {
    const { runs } = await getJson('/api/runs');
    const list = Array.isArray(runs) ? runs : [];
    ui.run.replaceChildren(...list.map((r) => new Option(`${r.name} (${r.records} records)`, r.name)));
    if (list.length === 0) {
      ui.desc.textContent = 'no runs: start the server with --runs DIR, a folder of training runs (each `mor train --out DIR/NAME` writes one)';
      clearCharts();
      setState('empty');
      return;
    }
    const wanted = decodeURIComponent(location.hash.slice(1));
    ui.run.value = list.some((r) => r.name === wanted) ? wanted : list[0].name;
    await showRun(ui.run.value);
  } catch (err) {
    ui.desc.textContent = '';
    showError(
      err instanceof ApiError && err.status === 404
        ? 'This server has no runs directory (start it with a runs directory to see training runs).'
        : `Could not list runs: ${err.message}`,
    );
    setState('error');
  }
}

async function showRun(name) {
  setState('loading');
  showError('');
  try {
    const run = await getJson(`/api/runs/${encodeURIComponent(name)}`);
    const records = Array.isArray(run.records) ? run.records : [];
    if (location.hash.slice(1) !== encodeURIComponent(name)) history.replaceState(null, '', `#${encodeURIComponent(name)}`);
    draw(records);
    setState('ready');
  } catch (err) {
    showError(`Could not load run '${name}': ${err.message}`);
    setState('error');
  }
}

function clearCharts() {
  for (const p of plots) p.destroy();
  plots = [];
  ui.charts.replaceChildren();
}

/** Last value per step of `pick(record)` over the records of one type. */
function byStep(records, type, pick) {
  const m = new Map();
  for (const r of records) {
    if (r.type !== type || typeof r.step !== 'number') continue;
    const v = pick(r);
    if (v !== undefined) m.set(r.step, v);
  }
  return m;
}

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** Series over the union of their steps, nulls where a series has no value (uPlot's aligned data). */
function align(seriesMaps) {
  const steps = [...new Set(seriesMaps.flatMap((s) => [...s.keys()]))].sort((a, b) => a - b);
  return [steps, ...seriesMaps.map((s) => steps.map((x) => (s.has(x) ? s.get(x) : null)))];
}

function perIndex(records, key) {
  const maps = [];
  for (const r of records) {
    if (r.type !== 'train' || !Array.isArray(r[key])) continue;
    r[key].forEach((v, i) => {
      if (num(v) === undefined) return;
      (maps[i] ??= new Map()).set(r.step, v);
    });
  }
  return maps.filter(Boolean);
}

function describe(records) {
  const train = records.filter((r) => r.type === 'train');
  const evals = records.filter((r) => r.type === 'eval');
  const last = train[train.length - 1];
  const lastEval = evals[evals.length - 1];
  const parts = [`${records.length} records`];
  if (last) parts.push(`step ${last.step}${last.total_steps ? ` of ${last.total_steps}` : ''}`, `loss ${fmt(last.loss)}`);
  if (lastEval) parts.push(`val NLL ${fmt(lastEval.val_nll)}${num(lastEval.val_nll_topk) !== undefined ? ` (top-k ${fmt(lastEval.val_nll_topk)})` : ''}`);
  return parts.join(' · ');
}

function fmt(x) {
  return typeof x === 'number' ? x.toFixed(4) : '–';
}

function draw(records) {
  clearCharts();
  ui.desc.textContent = describe(records);
  const charts = [];

  const loss = byStep(records, 'train', (r) => num(r.loss));
  const val = byStep(records, 'eval', (r) => num(r.val_nll));
  const valTopk = byStep(records, 'eval', (r) => num(r.val_nll_topk));
  const lossSeries = [
    { label: 'train loss', map: loss },
    { label: 'val NLL (causal)', map: val, points: true },
    { label: 'val NLL (top-k)', map: valTopk, points: true, dash: [6, 4] },
  ].filter((s) => s.map.size > 0);
  if (lossSeries.length) charts.push({ id: 'loss', title: 'Loss and validation NLL (nats)', series: lossSeries });

  const lr = byStep(records, 'train', (r) => num(r.lr));
  if (lr.size) charts.push({ id: 'lr', title: 'Learning rate', series: [{ label: 'lr', map: lr }], sci: true });

  const sel = perIndex(records, 'selected_fraction');
  if (sel.length) {
    charts.push({
      id: 'selected_fraction',
      title: 'Selected fraction per recursion (expert-choice)',
      series: sel.map((map, i) => ({ label: `recursion ${i + 1}`, map })),
      range: [0, 1],
    });
  }
  const load = perIndex(records, 'load');
  if (load.length) {
    charts.push({
      id: 'load',
      title: 'Load per depth (token-choice)',
      series: load.map((map, i) => ({ label: `depth ${i + 1}`, map })),
      range: [0, 1],
    });
  }

  if (charts.length === 0) {
    ui.desc.textContent += ' · nothing to plot yet';
    return;
  }
  for (const c of charts) plots.push(chart(c));
}

function chart({ id, title, series, sci, range }) {
  const box = document.createElement('section');
  box.className = 'chart panel';
  box.dataset.chart = id;
  const h = document.createElement('h2');
  h.textContent = title;
  const plot = document.createElement('div');
  plot.className = 'plot';
  box.append(h, plot);
  ui.charts.append(box);

  const data = align(series.map((s) => s.map));
  const width = Math.max(280, plot.clientWidth || 500);
  const yValues = sci
    ? (u, vals) => vals.map((v) => (v === 0 ? '0' : v.toExponential(1)))
    : (u, vals) => vals.map((v) => String(+v.toFixed(4)));
  const opts = {
    width,
    height: 240,
    scales: { x: { time: false }, y: range ? { range: (u, lo, hi) => [Math.min(range[0], lo), Math.max(range[1], hi)] } : {} },
    axes: [{ label: 'step', incrs: STEP_INCRS }, { size: 64, values: yValues }],
    series: [
      { label: 'step' },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: COLORS[i % COLORS.length],
        width: 2,
        spanGaps: true,
        dash: s.dash,
        points: s.points ? { show: true, size: 6 } : {},
      })),
    ],
    legend: { live: true },
  };
  const u = new uPlot(opts, data, plot);
  const ro = new ResizeObserver(() => {
    const w = plot.clientWidth;
    if (w > 0 && Math.abs(w - u.width) > 2) u.setSize({ width: w, height: 240 });
  });
  ro.observe(plot);
  return { destroy: () => (ro.disconnect(), u.destroy()) };
}

ui.run.addEventListener('change', () => showRun(ui.run.value));
ui.reload.addEventListener('click', () => loadRuns());
window.addEventListener('hashchange', () => {
  const name = decodeURIComponent(location.hash.slice(1));
  if (name && name !== ui.run.value && [...ui.run.options].some((o) => o.value === name)) {
    ui.run.value = name;
    showRun(name);
  }
});

loadRuns();
