// The `mor` command as a user runs it: help, info, bad flags named in the error, and a tiny
// train → eval → generate round trip on a small corpus.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdirSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { withTempDir } from './helpers/temp-dir.js';

const BIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));

function mor(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe('mor CLI', () => {
  test('--help lists the commands; every command has --help', () => {
    const r = mor('--help');
    assert.equal(r.code, 0);
    for (const cmd of ['info', 'train', 'eval', 'generate', 'demo']) {
      assert.match(r.stdout, new RegExp(`\\b${cmd}\\b`));
      const h = mor(cmd, '--help');
      assert.equal(h.code, 0, `${cmd} --help`);
      assert.match(h.stdout, /Usage: mor/);
    }
  });

  test('info reports the backend and a preset size', () => {
    const r = mor('info', '--json', '--preset', 'small');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.ok(j['backend'] === 'native' || j['backend'] === 'ref');
    assert.ok(typeof j['gemmProvider'] === 'string');
    assert.ok((j['params_unique'] as number) > 10e6);
    const ref = mor('--backend', 'ref', 'info', '--json');
    assert.equal((JSON.parse(ref.stdout) as { backend: string }).backend, 'ref');
  });

  test('bad flags and values are named', () => {
    let r = mor('train', '--stepz', '3');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--stepz/);
    r = mor('train', '--steps', 'many');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--steps must be an integer/);
    r = mor('info', '--preset', 'nope');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown preset 'nope'/);
    r = mor('--backend', 'gpu', 'info');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--backend 'gpu'/);
    r = mor('eval', '--model', '/nonexistent/ckpt');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /checkpoint directory not found/);
  });

  test('train → eval → generate on a small corpus', () =>
    withTempDir('mor-cli-', (dir) => {
      const corpus = join(dir, 'corpus.jsonl');
      const lines: string[] = [];
      for (let i = 0; i < 60; i++) lines.push(JSON.stringify({ text: `Document ${i}: the union is strong and the people are free. `.repeat(8) }));
      writeFileSync(corpus, lines.join('\n') + '\n');
      const out = join(dir, 'run');
      const cache = join(dir, 'cache');
      let r = mor('train', '--preset', 'tiny-rec2', '--data', corpus, '--steps', '3', '--batch', '2', '--seq-len', '32', '--out', out, '--cache-dir', cache, '--json');
      assert.equal(r.code, 0, r.stderr);
      assert.ok(existsSync(join(out, 'checkpoint', 'model.safetensors')));
      assert.match(r.stderr, /"type":"train"/);
      r = mor('eval', '--model', join(out, 'checkpoint'), '--data', corpus, '--seq-len', '32', '--batch', '2', '--cache-dir', cache, '--json');
      assert.equal(r.code, 0, r.stderr);
      const ev = JSON.parse(r.stdout) as { val_nll: number; val_bpb: number };
      assert.ok(Number.isFinite(ev.val_nll) && ev.val_nll > 0 && ev.val_bpb > 0);
      r = mor('generate', '--model', join(out, 'checkpoint'), '--prompt', 'the union', '--max-tokens', '5', '--seed', '3');
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^--- "the union"\nthe union/);
  }));
});

describe('mor train and Ctrl-C', () => {
  test('SIGINT saves a checkpoint at the current step and exits with 130', () =>
    withTempDir('mor-sigint-', async (dir) => {
      const corpus = join(dir, 'texts');
      mkdirSync(corpus);
      for (let i = 0; i < 8; i++) writeFileSync(join(corpus, `${i}.txt`), `Text ${i}. We the people of the union, in order to form a more perfect union. `.repeat(60));
      const out = join(dir, 'run');
      const args = [BIN, 'train', '--preset', 'tiny-rec2', '--data', corpus, '--steps', '100000', '--batch', '2', '--seq-len', '32', '--out', out, '--cache-dir', join(dir, 'cache'), '--json'];
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      const code = await new Promise<number>((resolveExit, reject) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error(`did not stop in time; stderr: ${stderr}`));
        }, 60_000);
        child.stderr.on('data', (d: Buffer) => {
          stderr += d.toString();
          if ((stderr.match(/"type":"train"/g) ?? []).length >= 3 && !child.killed) child.kill('SIGINT');
        });
        child.on('exit', (c) => {
          clearTimeout(timer);
          resolveExit(c ?? -1);
        });
      });
      assert.equal(code, 130, stderr);
      assert.match(stderr, /interrupted: saving a checkpoint/);
      const state = JSON.parse(readFileSync(join(out, 'checkpoint', 'trainer_state.json'), 'utf8')) as { state: { step: number }; options: { totalSteps: number } };
      assert.ok(state.state.step >= 3 && state.state.step < 100000);
      assert.equal(state.options.totalSteps, 100000);
  }));
});
