/**
 * `faultline worker --processes N`: N worker processes on one task queue, restarted when they
 * die, stopped together by one signal, and never left running without their supervisor.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import { freePort } from '../../src/devserver/temporal-cli';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { msToTs } from '@temporalio/common/lib/time';
import { ROOT, type TestEnv, createTestEnv, eventually, syntheticSpec } from '../helpers/env';
import { startFaultProxy } from '../helpers/fault-proxy';
import { workerChildren } from '../helpers/processes';
import { startTestS3 } from '../helpers/s3';

let env: TestEnv;
before(async () => {
  env = await createTestEnv({ taskQueue: 'faultline-supervisor' });
});
after(async () => {
  await env.teardown();
});

/** Each thread of a process: its name and nice value (Linux /proc). */
function threadNices(pid: number): { name: string; nice: number }[] {
  return readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      // Fields after the name (which may hold spaces) start after its closing parenthesis; nice is field 19.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return [{ name: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(), nice: Number(fields[16]) }];
    } catch {
      return []; // a thread that ended meanwhile
    }
  });
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

function startSupervisor(processes: string, extraEnv: NodeJS.ProcessEnv = {}): { child: ChildProcess; logs: () => string; exited: Promise<number | null> } {
  let logs = '';
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), 'worker', '--processes', processes], {
    env: { ...env.env, FAULTLINE_LOG_LEVEL: 'info', ...extraEnv },
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
    // Batch work yields to the server and the shell (FAULTLINE_WORKER_NICE, default 10): the process and the threads it starts, not its supervisor.
    for (const pid of workerChildren(supervisor.child.pid ?? -1)) {
      assert.equal(os.getPriority(pid), 10, `worker process ${pid}`);
      const threads = threadNices(pid);
      assert.ok(threads.length >= 8 && threads.every(({ nice }) => nice === 10), JSON.stringify(threads));
    }
    assert.equal(os.getPriority(supervisor.child.pid), 0, 'the supervisor keeps its priority');
    // FAULTLINE_WORKER_GC=auto: with a process on every core, each collects garbage on its main thread.
    const mainThreadGc = 3 >= os.availableParallelism();
    for (const pid of workerChildren(supervisor.child.pid ?? -1)) {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      assert.equal(argv.includes('--single-threaded-gc'), mainThreadGc, argv.join(' '));
      assert.ok(argv.includes('--max-old-space-size=256'), argv.join(' '));
    }
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

  it('a worker started nicer than FAULTLINE_WORKER_NICE stays as nice as it was started (the setting only lowers priority)', async () => {
    let logs = '';
    // `nice` runs node at 15; the supervisor's children inherit it.
    const child = spawn('nice', ['-n', '15', process.execPath, path.join(ROOT, 'bin', 'faultline.js'), 'worker', '--processes', '1'], {
      env: { ...env.env, FAULTLINE_LOG_LEVEL: 'info' },
      cwd: env.dir,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr?.on('data', (chunk: Buffer) => (logs += chunk.toString()));
    try {
      await eventually(() => /"worker started"/.test(logs), 60_000, 'the worker started');
      const threads = threadNices(child.pid ?? -1);
      assert.ok(threads.length >= 8 && threads.every(({ nice }) => nice === 15), JSON.stringify(threads));
      assert.doesNotMatch(logs, /could not lower/);
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
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

  it('stops (exit 2) instead of restarting processes that cannot start as configured', async () => {
    // A namespace without Faultline's search attributes: every process would fail the same way.
    await env.connection.workflowService.registerNamespace({ namespace: 'bare', workflowExecutionRetentionPeriod: msToTs('1 day') });
    await eventually(
      async () =>
        await env.connection.workflowService.describeNamespace({ namespace: 'bare' }).then(
          () => true,
          () => false,
        ),
      30_000,
      'the namespace to exist',
    );
    const started = Date.now();
    const supervisor = startSupervisor('2', { TEMPORAL_NAMESPACE: 'bare' });
    const timer = setTimeout(() => supervisor.child.kill('SIGKILL'), 60_000);
    const code = await supervisor.exited;
    clearTimeout(timer);
    assert.equal(code, 2, supervisor.logs());
    assert.ok(Date.now() - started < 60_000);
    assert.match(supervisor.logs(), /^error: .*FaultlineFlagged.*$/m);
    assert.doesNotMatch(supervisor.logs(), /restarting in/, 'no process was restarted');
  });

  it('a supervised worker process that fails to start after connecting exits (for its supervisor to restart it) instead of lingering', { timeout: 60_000 }, async () => {
    // As the supervisor starts it (an IPC channel); its workflow bundle cannot be read, so the worker fails after its connection is open.
    const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), 'worker', '--processes', '1'], {
      env: { ...env.env, FAULTLINE_WORKFLOW_BUNDLE: path.join(env.dir, 'no-such-bundle.js') },
      cwd: env.dir,
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 45_000);
    const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    clearTimeout(timer);
    assert.equal(signal, null, `it exited by itself (stderr: ${stderr.slice(-500)})`);
    assert.equal(code, 1);
    assert.match(stderr, /^error: .*no-such-bundle/m);
  });

  it('a process restarted while job storage is away waits for it; its supervisor and the others run on', async () => {
    const s3 = await startTestS3('supervised');
    const minio = { host: '127.0.0.1', port: Number(new URL(s3.endpoint).port) };
    let proxy = await startFaultProxy(minio);
    const storage = { ...s3.env, FAULTLINE_S3_ENDPOINT: proxy.url, FAULTLINE_STORAGE: `s3://${s3.bucket}/jobs` };
    const supervisor = startSupervisor('2', storage);
    const started = () => (supervisor.logs().match(/"worker started"/g) ?? []).length;
    try {
      await eventually(() => started() === 2, 60_000, 'two worker processes');
      await proxy.close(); // job storage away: connections refused
      const [victim] = workerChildren(supervisor.child.pid ?? -1);
      assert.ok(victim);
      process.kill(victim, 'SIGKILL');
      await eventually(() => /job storage does not answer yet/.test(supervisor.logs()), 60_000, 'the restarted process waiting for storage');
      assert.equal(supervisor.child.exitCode, null, `the supervisor runs on: ${supervisor.logs().slice(-1_000)}`);
      proxy = await startFaultProxy(minio, Number(new URL(storage.FAULTLINE_S3_ENDPOINT).port));
      await eventually(() => started() === 3, 60_000, 'the restarted process started once storage answered');
      assert.match(supervisor.logs(), /job storage answers again/);
      assert.equal(workerChildren(supervisor.child.pid ?? -1).length, 2);
    } finally {
      supervisor.child.kill('SIGTERM');
      await supervisor.exited;
      await proxy.close();
      await s3.stop();
    }
  });

  it('refuses a bad --processes in one line', async () => {
    const supervisor = startSupervisor('0');
    assert.equal(await supervisor.exited, 2);
    assert.match(supervisor.logs(), /^error: --processes wants a whole number from 1 to 256, got "0"$/m);
  });
});

describe('a command whose parent exits without passing a signal on (npx given SIGINT by a script)', () => {
  it('notices it was orphaned and stops, instead of running on', { timeout: 60_000 }, async () => {
    // The parent starts `faultline codec-server` and, like npx, exits on SIGINT without forwarding it.
    const port = await freePort();
    const wrapper = spawn(
      process.execPath,
      [
        '-e',
        `const child = require('node:child_process').spawn(process.execPath, [${JSON.stringify(path.join(ROOT, 'bin', 'faultline.js'))}, 'codec-server', '--port', '${port}'], { stdio: ['ignore', 'ignore', 'inherit'] });
         console.log(child.pid);
         process.on('SIGINT', () => process.exit(0));
         setInterval(() => {}, 1000);`,
      ],
      { env: { ...process.env, FAULTLINE_PAYLOAD_KEY: Buffer.alloc(32, 7).toString('hex') }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    wrapper.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const [line] = (await once(wrapper.stdout!, 'data')) as [Buffer];
    const childPid = Number(line.toString().trim());
    await eventually(async () => stderr.includes('codec server on'), 20_000, 'the codec server to start');
    wrapper.kill('SIGINT');
    await once(wrapper, 'exit');
    assert.ok(alive(childPid), 'the command outlived its parent for a moment (the signal was not passed on)');
    await eventually(async () => !alive(childPid), 10_000, 'the orphaned command to stop by itself');
  });

  it('a command started detached on purpose (its own process group, as npm run stack starts them) outlives its parent', { timeout: 60_000 }, async () => {
    const port = await freePort();
    const starter = spawn(
      process.execPath,
      [
        '-e',
        `const child = require('node:child_process').spawn(process.execPath, [${JSON.stringify(path.join(ROOT, 'bin', 'faultline.js'))}, 'codec-server', '--port', '${port}'], { detached: true, stdio: 'ignore' });
         child.unref();
         console.log(child.pid);`,
      ],
      { env: { ...process.env, FAULTLINE_PAYLOAD_KEY: Buffer.alloc(32, 7).toString('hex') }, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const [line] = (await once(starter.stdout!, 'data')) as [Buffer];
    const childPid = Number(line.toString().trim());
    await once(starter, 'exit');
    try {
      await eventually(
        () =>
          fetch(`http://127.0.0.1:${port}/decode`, { method: 'POST', body: '{"payloads":[]}', headers: { 'content-type': 'application/json' } }).then(
            () => true,
            () => false,
          ),
        20_000,
        'the detached codec server to answer',
      );
      // Three parent checks later it still runs: it was detached on purpose, not orphaned.
      await new Promise((resolve) => setTimeout(resolve, 3_500));
      assert.ok(alive(childPid), 'the detached command still runs after its parent exited');
    } finally {
      if (alive(childPid)) process.kill(childPid, 'SIGTERM');
    }
  });
});
