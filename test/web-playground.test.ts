// The web playground of `mor serve` in a real browser (Debian's chromium, driven by
// playwright-core; no browser is ever downloaded): a tiny expert-choice model trained for two
// steps, the real server, a streamed completion with depth-coloured tokens and a histogram
// that adds up, Stop, compare mode at two max depths, and the runs page's uPlot charts.
// Screenshots go to the test's temporary folder, or to $MOR_WEB_SCREENSHOTS when set (kept).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startServer } from '../src/serve/server.js';
import { useTempDir } from './helpers/temp-dir.js';

const CHROMIUM = '/usr/bin/chromium';
const BIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const tempDir = useTempDir('mor-web-');

function trainTinyModel(dir: string): { modelDir: string; runsDir: string } {
  const corpus = join(dir, 'corpus.jsonl');
  const lines: string[] = [];
  for (let i = 0; i < 60; i++) lines.push(JSON.stringify({ text: `Document ${i}: the union is strong and the people are free. `.repeat(8) }));
  writeFileSync(corpus, lines.join('\n') + '\n');
  const runsDir = join(dir, 'runs');
  mkdirSync(runsDir);
  const out = join(runsDir, 'mine');
  const r = spawnSync(
    process.execPath,
    [BIN, 'train', '--preset', 'tiny-mor3', '--steps', '2', '--batch', '2', '--seq-len', '32', '--data', corpus, '--out', out, '--cache-dir', join(dir, 'cache'), '--json'],
    { encoding: 'utf8', timeout: 60_000 },
  );
  assert.equal(r.status, 0, r.stderr);
  return { modelDir: join(out, 'checkpoint'), runsDir };
}

interface ColumnView {
  maxDepth: number;
  finish: string;
  depths: number[];
  histogram: Record<number, number>;
}

// Browser-side code is passed as source text: the project compiles without the DOM library.
const READ_COLUMNS = `Array.from(document.querySelectorAll('#columns .column')).map((el) => {
  const histogram = {};
  for (const row of el.querySelectorAll('.hrow')) histogram[Number(row.dataset.depth)] = Number(row.querySelector('.count').textContent);
  return {
    maxDepth: Number(el.dataset.maxDepth),
    finish: el.dataset.finish ?? '',
    depths: Array.from(el.querySelectorAll('.output span.tok')).map((s) => Number(s.dataset.depth)),
    histogram,
  };
})`;

/** What the page shows per output column: the spans' depths and the histogram's counts. */
async function columns(page: Page): Promise<ColumnView[]> {
  return (await page.evaluate(READ_COLUMNS)) as ColumnView[];
}

function checkColumn(col: ColumnView, numRecursions: number): void {
  assert.ok(col.depths.length > 0, 'streamed tokens appear');
  for (const d of col.depths) assert.ok(Number.isInteger(d) && d >= 1 && d <= Math.min(numRecursions, col.maxDepth), `depth ${d} within 1..${col.maxDepth}`);
  const total = Object.values(col.histogram).reduce((a, b) => a + b, 0);
  assert.equal(total, col.depths.length, 'histogram counts add up to the number of token spans');
  for (let d = 1; d <= numRecursions; d++) {
    assert.equal(col.histogram[d], col.depths.filter((x) => x === d).length, `histogram bar d${d}`);
  }
}

async function setRange(page: Page, id: string, value: number): Promise<void> {
  await page.evaluate(`(() => {
    const input = document.getElementById(${JSON.stringify(id)});
    input.value = ${JSON.stringify(String(value))};
    input.dispatchEvent(new Event('input', { bubbles: true }));
  })()`);
}

async function outputText(page: Page): Promise<string> {
  return (await page.evaluate(`document.querySelector('#columns .column .output').textContent`)) as string;
}

/** The same completion without streaming, straight from the API. */
async function apiText(url: string, body: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  assert.equal(res.status, 200);
  const j = (await res.json()) as { choices: Array<{ text: string }> };
  return j.choices[0]?.text ?? '';
}

/** Waits until the playground is no longer generating; fails with the page's error message if it failed. */
async function finished(page: Page, expected: 'done' | 'stopped'): Promise<void> {
  await page.waitForSelector('body:not([data-state="running"])');
  const state = await page.getAttribute('body', 'data-state');
  const error = (await page.isVisible('#error')) ? await page.textContent('#error') : '';
  assert.equal(state, expected, `playground state (error shown: ${error || 'none'})`);
}

test('web playground and runs page in a real browser', { timeout: 90_000 }, async (t) => {
  if (!existsSync(CHROMIUM)) {
    t.skip(`${CHROMIUM} is not installed (apt-get install chromium); this test never downloads a browser`);
    return;
  }
  const dir = tempDir();
  const shots = process.env['MOR_WEB_SCREENSHOTS'] ?? join(dir, 'screenshots');
  mkdirSync(shots, { recursive: true });
  const { modelDir, runsDir } = trainTinyModel(dir);
  const userData = join(dir, 'chromium-profile');
  mkdirSync(userData);

  const server = await startServer({ modelDir, port: 0, runsDir });
  let context: BrowserContext | null = null;
  try {
    context = await chromium.launchPersistentContext(userData, {
      executablePath: CHROMIUM,
      headless: true,
      args: ARGS,
      viewport: { width: 1200, height: 900 },
    });
    const page = context.pages()[0] ?? (await context.newPage());
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
    });
    page.setDefaultTimeout(20_000);

    // --- the playground: model info sets the sliders
    await page.goto(`${server.url}/`);
    await page.waitForFunction(`/recursion/.test(document.getElementById('model-desc').textContent)`);
    const models = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: Array<{ mor: { num_recursions: number; routing: string | null } }> };
    const mor = models.data[0]?.mor;
    assert.ok(mor, 'the server lists the model');
    const nr = mor.num_recursions;
    assert.equal(nr, 3);
    assert.equal(await page.getAttribute('#max_depth', 'max'), String(nr));
    assert.equal(await page.isVisible('#threshold'), mor.routing === 'expert_choice');
    assert.equal(await page.locator('#legend .tok').count(), nr);

    // --- one streamed completion
    await page.fill('#prompt', 'the union is');
    await page.fill('#max_tokens', '24');
    await page.fill('#seed', '7');
    await page.fill('#temperature', '0'); // greedy: a two-step model rarely samples its way to EOS then
    await page.click('#generate');
    await finished(page, 'done');
    const [single] = await columns(page);
    assert.ok(single);
    assert.match(single.finish, /^(stop|length)$/);
    checkColumn(single, nr);
    assert.notEqual(await page.textContent('.column .s-ttft'), '–', 'time to first token shown');
    assert.notEqual(await page.textContent('.column .s-mean'), '–', 'mean depth shown');
    assert.equal(await outputText(page), await apiText(server.url, { prompt: 'the union is', max_tokens: 24, seed: 7, temperature: 0, top_p: 0.95, top_k: 40, mor: { max_depth: nr, threshold: 0.5 } }), 'the page shows the completion the API gives');
    await page.screenshot({ path: join(shots, 'playground.png'), fullPage: true });

    // --- sampled hot: pieces that hold several tokens (a character split over byte tokens) lose no text
    await page.fill('#temperature', '1.5');
    await page.fill('#seed', '3');
    await page.click('#generate');
    await finished(page, 'done');
    const [hot] = await columns(page);
    assert.ok(hot);
    checkColumn(hot, nr);
    assert.equal(await outputText(page), await apiText(server.url, { prompt: 'the union is', max_tokens: 24, seed: 3, temperature: 1.5, top_p: 0.95, top_k: 40, mor: { max_depth: nr, threshold: 0.5 } }));
    await page.fill('#temperature', '0');
    await page.fill('#seed', '7');

    // --- Stop aborts the request; the server serves the next one
    await page.evaluate(`document.getElementById('generate').click(); document.getElementById('stop').click()`);
    await finished(page, 'stopped');
    assert.equal(await page.isDisabled('#stop'), true);

    // --- compare mode: the same prompt and seed at max depth 3 and 1, side by side
    await page.check('#compare');
    await setRange(page, 'max_depth', nr);
    await setRange(page, 'depth_b', 1);
    await page.click('#generate');
    await finished(page, 'done');
    const pair = await columns(page);
    assert.equal(pair.length, 2);
    assert.deepEqual(
      pair.map((c) => c.maxDepth),
      [nr, 1],
    );
    for (const c of pair) checkColumn(c, nr);
    assert.ok(pair[1]?.depths.every((d) => d === 1), 'max depth 1 gives every token depth 1');
    await page.screenshot({ path: join(shots, 'compare.png'), fullPage: true });

    // --- the runs page: uPlot charts of the run's metrics.jsonl
    await page.goto(`${server.url}/runs`);
    await page.waitForSelector('body[data-state="ready"]');
    await page.waitForSelector('.chart canvas');
    const charts = await page.evaluate(`Array.from(document.querySelectorAll('.chart')).map((e) => e.dataset.chart)`);
    assert.deepEqual(charts, ['loss', 'lr', 'selected_fraction']);
    assert.match((await page.textContent('#run')) ?? '', /mine/);
    await page.screenshot({ path: join(shots, 'runs.png'), fullPage: true });

    assert.deepEqual(problems, []);

    // --- a server with an API key: the page loads, asks for the key, then generates with it
    const locked = await startServer({ modelDir, port: 0, apiKey: 'sekret' });
    try {
      await page.goto(`${locked.url}/`);
      await page.waitForSelector('#apikey', { state: 'visible' });
      assert.match((await page.textContent('#error')) ?? '', /API key/);
      await page.fill('#apikey', 'sekret');
      await page.press('#apikey', 'Enter');
      await page.waitForFunction(`/recursion/.test(document.getElementById('model-desc').textContent)`);
      await page.fill('#max_tokens', '4');
      await page.click('#generate');
      await finished(page, 'done');
      checkColumn((await columns(page))[0] as ColumnView, nr);
    } finally {
      await locked.close();
    }
  } finally {
    await context?.close();
    await server.close();
  }
});
