/**
 * `faultline worker --processes N`: N worker processes on one task queue, restarted when they
 * die, stopped together by one signal, and never left running without their supervisor.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT, type TestEnv, createTestEnv, eventually, syntheticSpec } from '../helpers/env';
import { workerChildren } from '../helpers/processes';

let env: TestEnv;
before(async () => {
  env = await createTestEnv({ taskQueue: 'faultline-supervisor' });
});
after(async () => {
  await env.teardown();
});

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

function startSupervisor(processes: string): { child: ChildProcess; logs: () => string; exited: Promise<number | null> } {
  let logs = '';
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), 'worker', '--processes', processes], {
    env: { ...env.env, FAULTLINE_LOG_LEVEL: 'info' },
    cwd: env.dir,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr?.on('data', (chunk: Buffer) => (logs += chunk.toString()));
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      process.off('exit', killOnExit);
      resolve(code);
    }),
  );
  return { child, logs: () => logs, exited };
}

describe('faultline worker --processes', () => {
  it('runs N processes, restarts a killed one, and stops them all on one SIGTERM', async () => {
    const supervisor = startSupervisor('3');
    await eventually(() => workerChildren(supervisor.child.pid ?? -1).length === 3 && (supervisor.logs().match(/"worker started"/g) ?? []).length === 3, 60_000, 'three worker processes');
    const [victim] = workerChildren(supervisor.child.pid ?? -1);
    assert.ok(victim);
    process.kill(victim, 'SIGKILL');
    await eventually(() => (supervisor.logs().match(/"worker started"/g) ?? []).length === 4, 60_000, 'the killed process restarted');
    assert.equal(workerChildren(supervisor.child.pid ?? -1).length, 3);
    assert.match(supervisor.logs(), /worker process exited; restarting/);

    const { jobId } = await env.client.start(syntheticSpec(Array.from({ length: 300 }, (_, i) => ({ id: `i${i}`, params: { cpuMs: 2 } }))));
    assert.equal((await env.client.result(jobId)).counts.Available, 300);

    const workers = workerChildren(supervisor.child.pid ?? -1);
    supervisor.child.kill('SIGTERM');
    assert.equal(await supervisor.exited, 0, supervisor.logs());
    assert.deepEqual(workers.filter(alive), [], 'every worker process stopped');
    assert.equal((supervisor.logs().match(/"worker stopped"/g) ?? []).length, 3, 'each process shut down gracefully');
  });

  it('worker processes shut themselves down when their supervisor is killed', async () => {
    const supervisor = startSupervisor('2');
    await eventually(() => (supervisor.logs().match(/"worker started"/g) ?? []).length === 2, 60_000, 'two worker processes');
    const workers = workerChildren(supervisor.child.pid ?? -1);
    assert.equal(workers.length, 2);
    supervisor.child.kill('SIGKILL');
    await supervisor.exited;
    await eventually(() => workers.filter(alive).length === 0, 30_000, 'orphaned workers to stop');
  });

  it('refuses a bad --processes in one line', async () => {
    const supervisor = startSupervisor('0');
    assert.equal(await supervisor.exited, 2);
    assert.match(supervisor.logs(), /^error: --processes wants a whole number from 1 to 256, got "0"$/m);
  });
});
