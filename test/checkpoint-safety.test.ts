// Checkpoint saves survive a crash at every point of the swap: a failure injected between each
// pair of steps, stale temporaries of dead processes, and a real kill -9 of a saving process.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createModel, type Model } from '../src/model/model.js';
import { preset } from '../src/model/presets.js';
import { CheckpointNotFoundError, loadCheckpoint, previousCheckpointDir, saveCheckpoint, SAVE_POINTS, type SavePoint } from '../src/train/checkpoint.js';

const CHILD = fileURLToPath(new URL('./helpers/save-loop-child.js', import.meta.url));
/** Above Linux's pid_max (2^22): no process has it. */
const DEAD_PID = 99_999_999;

let tmp: string;
let model: Model;
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'mor-ckpt-safety-'));
  model = createModel(preset('tiny-rec2'), 2);
});
after(() => rmSync(tmp, { recursive: true, force: true }));

async function savedStep(dir: string): Promise<number> {
  const ck = await loadCheckpoint(dir);
  return (ck.trainerState as { step: number }).step;
}

/** A save that dies at `at` (the throw stands for the kill: nothing runs after it). */
function crashingSave(dir: string, step: number, at: SavePoint): void {
  assert.throws(
    () =>
      saveCheckpoint(dir, model, {
        trainerState: { step },
        onSavePoint: (p) => {
          if (p === at) throw new Error(`crash at ${p}`);
        },
      }),
    /crash at/,
  );
}

/** A normal save after a crash: it loads, and only the checkpoint itself is left in the folder. */
async function saveAndCheckClean(dir: string, step: number): Promise<void> {
  saveCheckpoint(dir, model, { trainerState: { step } });
  assert.equal(await savedStep(dir), step);
  assert.deepEqual(readdirSync(dirname(dir)), ['checkpoint']);
}

describe('crash-safe checkpoint saves', () => {
  const expected: Record<SavePoint, number> = { 'files-written': 1, 'old-moved-aside': 1, 'new-in-place': 2 };
  for (const at of SAVE_POINTS) {
    test(`a crash at '${at}' leaves a loadable checkpoint; the next save cleans up`, async () => {
      const dir = join(tmp, `point-${at}`, 'checkpoint');
      saveCheckpoint(dir, model, { trainerState: { step: 1 } });
      crashingSave(dir, 2, at);
      assert.equal(await savedStep(dir), expected[at]);
      if (at === 'old-moved-aside') {
        // the swap's gap: no checkpoint/, the previous one waits beside it
        assert.equal(existsSync(dir), false);
        assert.equal(existsSync(previousCheckpointDir(dir)), true);
      }
      await saveAndCheckClean(dir, 3);
    });
  }

  test('a crash during the first save leaves no checkpoint, and says so', async () => {
    const dir = join(tmp, 'first', 'checkpoint');
    crashingSave(dir, 1, 'files-written');
    await assert.rejects(loadCheckpoint(dir), CheckpointNotFoundError);
    await saveAndCheckClean(dir, 1);
  });

  test('temporaries of dead processes are removed by the next save; live ones are kept', async () => {
    const parent = join(tmp, 'stale');
    const dir = join(parent, 'checkpoint');
    saveCheckpoint(dir, model, { trainerState: { step: 1 } });
    for (const name of [`.checkpoint.tmp-${DEAD_PID}`, `.checkpoint.old-${DEAD_PID}`, `.checkpoint.tmp-${process.ppid}`]) {
      mkdirSync(join(parent, name));
      writeFileSync(join(parent, name, 'model.safetensors'), 'half');
    }
    saveCheckpoint(dir, model, { trainerState: { step: 2 } });
    assert.deepEqual(readdirSync(parent).sort(), ['.checkpoint.tmp-' + process.ppid, 'checkpoint']);
    assert.equal(await savedStep(dir), 2);
  });

  test('kill -9 of a process in the middle of saving leaves a loadable checkpoint', async () => {
    for (let round = 0; round < 3; round++) {
      const dir = join(tmp, `kill-${round}`, 'checkpoint');
      const child = spawn(process.execPath, [CHILD, '--save-loop', dir, 'small'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      // kill while save 2 + round is under way (a 44 MB model: each save takes a while)
      const target = `saving ${2 + round}\n`;
      await new Promise<void>((resolveExit, reject) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error(`the child did not reach '${target.trim()}': ${out} ${stderr}`));
        }, 60_000);
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes(target) && child.exitCode === null && !child.killed) setTimeout(() => child.kill('SIGKILL'), round * 15);
        });
        child.on('exit', (_code, signal) => {
          clearTimeout(timer);
          if (signal === 'SIGKILL') resolveExit();
          else reject(new Error(`child exited without being killed: ${stderr}`));
        });
      });
      const step = await savedStep(dir);
      assert.ok(step === 1 + round || step === 2 + round, `round ${round}: loaded step ${step}; child said ${out.trim().split('\n').join(', ')}`);
      await saveAndCheckClean(dir, 100);
    }
  });
});
