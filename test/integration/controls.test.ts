/**
 * Pause / resume and live limits on the real dev server, through the CLI where operators use it.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { ErrorTypes, type JobResult, flagSignal, pauseSignal, resumeSignal, sliceWorkflowId } from '../../src/shared';
import { ROOT, type RunningWorker, type TestEnv, createTestEnv, eventually, historyLength, syntheticSpec, runCli } from '../helpers/env';

const run = promisify(execFile);
let env: TestEnv;
let worker: RunningWorker;

before(async () => {
  env = await createTestEnv({ taskQueue: 'faultline-controls' });
  worker = await env.startWorker();
});

after(async () => {
  await worker?.stop();
  await env?.teardown();
});

function cli(args: string[]) {
  return runCli(args, { env: { ...env.env, FAULTLINE_LOG_LEVEL: 'error' }, cwd: env.dir });
}

describe('pause, resume and live limits (real dev server, CLI)', () => {
  it('a paused 300-item job finishes nothing for 6 s and is listed as Paused; after resume it ends 300/300 Available', async () => {
    const items = Array.from({ length: 300 }, (_, index) => ({ id: `p${index}`, params: { cpuMs: 20 } }));
    const { jobId } = await env.client.start(syntheticSpec(items, { batchSize: 5, concurrency: 2 }));
    await eventually(async () => (await env.client.progress(jobId)).counts.Available >= 10, 30_000, 'some items done');
    const paused = await cli(['pause', jobId]);
    assert.equal(paused.code, 0, paused.stderr);
    assert.match(paused.stdout, /is paused/);
    // In-flight batches finish; then nothing moves.
    await eventually(async () => (await env.client.progress(jobId)).inFlight === 0, 30_000, 'in-flight batches finished');
    const held = await env.client.progress(jobId);
    assert.equal(held.phase, 'paused');
    assert.equal(held.paused, true);
    assert.ok(held.counts.Available < 300, 'paused before the end');
    await eventually(async () => (await env.client.list({ status: 'Paused' })).some((job) => job.jobId === jobId), 15_000, 'FaultlineStatus = Paused in visibility');
    await new Promise((resolve) => setTimeout(resolve, 6_000)); // the observation itself: 6 s in which nothing may finish
    assert.equal((await env.client.progress(jobId)).counts.Available, held.counts.Available, 'no item finished while paused');
    const resumed = await cli(['resume', jobId]);
    assert.equal(resumed.code, 0, resumed.stderr);
    const result = await env.client.result(jobId);
    assert.deepEqual([result.status, result.counts.Available], ['Succeeded', 300]);
  });

  it('slices pause with their job: started held, no batch runs until resume (by signal, as from the Web UI)', async () => {
    const items = Array.from({ length: 300 }, (_, index) => ({ id: `s${index}`, params: { cpuMs: 10 } }));
    const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 100, batchSize: 5, concurrency: 1 }));
    await env.client.handle(jobId).signal(pauseSignal);
    await eventually(async () => (await env.client.progress(jobId)).paused === true, 15_000, 'pause taken');
    // Slices the job had already asked to start before the pause get it by signal; whatever they
    // had in flight finishes. After that, nothing may be scheduled and no slice may start.
    const settledState = async () => {
      const events = (await env.client.handle(jobId).fetchHistory()).events ?? [];
      const initiated = events.flatMap((event) =>
        event.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId ? [event.startChildWorkflowExecutionInitiatedEventAttributes.workflowId] : [],
      );
      const started = events.filter((event) => event.childWorkflowExecutionStartedEventAttributes).length;
      const children = await Promise.all(
        initiated.map(async (id) => {
          const history = (await env.client.client.workflow.getHandle(id).fetchHistory()).events ?? [];
          const input = history[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0]?.data;
          const startedHeld = input ? (JSON.parse(Buffer.from(input).toString()) as { paused?: boolean }).paused === true : false;
          const signalled = history.some((event) => event.workflowExecutionSignaledEventAttributes?.signalName === 'sliceControl');
          return {
            // Held (by its input or the job's signal) and that seen by a completed workflow task.
            held: (startedHeld || signalled) && history.at(-1)?.workflowTaskCompletedEventAttributes !== undefined,
            scheduled: history.filter((event) => event.activityTaskScheduledEventAttributes).length,
            completed: history.filter((event) => event.activityTaskCompletedEventAttributes).length,
          };
        }),
      );
      return { initiated: initiated.length, started, children };
    };
    const quiet = (state: Awaited<ReturnType<typeof settledState>>) => state.started === state.initiated && state.children.every((child) => child.held && child.scheduled === child.completed);
    await eventually(async () => quiet(await settledState()), 20_000, 'slices held, in-flight batches finished');
    const before = await settledState();
    await new Promise((resolve) => setTimeout(resolve, 2_000)); // nothing may happen meanwhile
    const later = await settledState();
    assert.equal(later.initiated, before.initiated, 'no new slice started while paused');
    assert.deepEqual(
      later.children.map((child) => child.scheduled),
      before.children.map((child) => child.scheduled),
      'no slice scheduled a batch while paused',
    );
    await env.client.handle(jobId).signal(resumeSignal);
    const result = await env.client.result(jobId);
    assert.deepEqual([result.status, result.counts.Available], ['Succeeded', 300]);
  });

  it('a paused job stays paused across a worker restart', async () => {
    const items = Array.from({ length: 40 }, (_, index) => ({ id: `r${index}`, params: { cpuMs: 20 } }));
    const { jobId } = await env.client.start(syntheticSpec(items, { batchSize: 2, concurrency: 1 }));
    await eventually(async () => (await env.client.progress(jobId)).counts.Available >= 2, 30_000, 'running');
    await env.client.pause(jobId);
    await eventually(async () => (await env.client.progress(jobId)).inFlight === 0, 30_000, 'in-flight work finished');
    const held = (await env.client.progress(jobId)).counts.Available;
    await worker.stop();
    worker = await env.startWorker(); // replays the job from its history: still held
    const after = await env.client.progress(jobId);
    assert.deepEqual([after.phase, after.paused, after.counts.Available], ['paused', true, held]);
    await env.client.resume(jobId);
    assert.deepEqual([(await env.client.result(jobId)).status, (await env.client.result(jobId)).counts.Available], ['Succeeded', 40]);
  });

  it('cancel works while paused: the held items become Cancelled', async () => {
    const items = Array.from({ length: 50 }, (_, index) => ({ id: `c${index}`, params: { cpuMs: 20 } }));
    const { jobId } = await env.client.start(syntheticSpec(items, { batchSize: 2, concurrency: 1 }));
    await eventually(async () => (await env.client.progress(jobId)).counts.Available >= 2, 30_000, 'running');
    await env.client.pause(jobId);
    const set = await env.client.setLimits(jobId, { concurrency: 3 });
    assert.equal(set.concurrency, 3, 'set works while paused');
    await env.client.cancel(jobId, 'not needed after all');
    const result = await env.client.result(jobId);
    assert.equal(result.status, 'Cancelled');
    assert.ok(result.counts.Cancelled > 0);
    assert.equal(result.counts.Available + result.counts.Cancelled, 50);
  });

  it('tightening --tolerated-failure-count 0 on a running job makes it fail at its next failure; the change is in the result', async () => {
    const items = [
      ...Array.from({ length: 30 }, (_, index) => ({ id: `ok${index}`, params: { cpuMs: 30 } })),
      { id: 'bad', params: { outcome: 'unprocessable' as const } },
      ...Array.from({ length: 30 }, (_, index) => ({ id: `late${index}`, params: { cpuMs: 30 } })),
    ];
    const { jobId } = await env.client.start(syntheticSpec(items, { batchSize: 1, concurrency: 1 }));
    await eventually(async () => (await env.client.progress(jobId)).counts.Available >= 2, 30_000, 'running');
    const set = await cli(['set', jobId, '--tolerated-failure-count', '0', '--json']);
    assert.equal(set.code, 0, set.stderr);
    assert.deepEqual(JSON.parse(set.stdout), { jobId, concurrency: 1, allowedFailures: 0 });
    const result = (await env.client.result(jobId)) as JobResult;
    assert.equal(result.status, 'Failed');
    assert.equal(result.stoppedBy?.type, ErrorTypes.ToleratedFailureThresholdExceeded);
    assert.equal(result.outputs?.find((record) => record.item === 'bad')?.status, 'Failed');
    assert.ok(result.counts.Cancelled > 0, 'the rest was not run');
    assert.deepEqual(
      result.limitsChanged?.map(({ origin, toleratedFailureCount }) => ({ origin, toleratedFailureCount })),
      [{ origin: 'update', toleratedFailureCount: 0 }],
    );
  });

  it('bad input and closed jobs are refused in one line with exit 2', async () => {
    const { jobId } = await env.client.start(syntheticSpec([{ id: 'a' }]));
    await env.client.result(jobId);
    await eventually(async () => (await env.client.handle(jobId).describe()).status.name === 'COMPLETED', 15_000, 'closed');
    const closed = await cli(['pause', jobId]);
    assert.equal(closed.code, 2);
    assert.match(closed.stderr, /JobClosed/);
    assert.equal(closed.stderr.trim().split('\n').length, 1);
    const bad = await cli(['set', jobId, '--concurrency', '0']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--concurrency must be a whole number/);
    const none = await cli(['set', jobId]);
    assert.equal(none.code, 2);
    // The flags a user types, not the request's field names.
    assert.match(none.stderr, /give at least one of --concurrency, --tolerated-failure-count, --tolerated-failure-percent/);
    assert.doesNotMatch(none.stderr, /toleratedFailureCount/);
  });

  it("a sliced job's status moves while its slices run (their counts are queried), and reading it adds nothing to any history", async () => {
    const { jobId } = await env.client.start(
      syntheticSpec(
        Array.from({ length: 2_000 }, (_, index) => ({ id: `s${index}`, params: { cpuMs: 4 } })),
        { batchSize: 10, shardSize: 1_000 },
      ),
    );
    const seen: number[] = [];
    await eventually(
      async () => {
        const progress = await env.client.progress(jobId);
        if (progress.phase === 'running') seen.push(progress.counts.Available);
        return progress.settled;
      },
      120_000,
      'the job to settle',
    );
    assert.ok(
      seen.some((done) => done % 1_000 !== 0),
      `counts moved within slices, not only when one ended: ${seen.join(' ')}`,
    );
    await eventually(async () => (await env.client.jobState(jobId)).kind === 'closed', 30_000, 'the job to close');
    const slice = sliceWorkflowId(jobId, 0, 1);
    const before = [await historyLength(env.client, jobId), await historyLength(env.client, slice)];
    await env.client.progress(jobId);
    assert.deepEqual([await historyLength(env.client, jobId), await historyLength(env.client, slice)], before);
  });

  it('watch without a terminal prints a line per change (a JSON line with --json), then the result', async () => {
    const { jobId } = await env.client.start(
      syntheticSpec(
        Array.from({ length: 6 }, (_, index) => ({ id: `w${index}`, params: { cpuMs: 150 } })),
        { batchSize: 1, concurrency: 1 },
      ),
    );
    // Held until watch has printed its first line, so a slow CLI start-up cannot miss the changes.
    await env.client.pause(jobId);
    const watching = spawn(process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), 'watch', jobId], { env: { ...env.env, FAULTLINE_LOG_LEVEL: 'error' }, cwd: env.dir });
    let stderr = '';
    watching.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => watching.once('exit', (code) => resolve(code)));
    await eventually(() => stderr.includes(jobId), 60_000, 'watch to print its first line');
    await env.client.resume(jobId);
    assert.equal(await exited, 0, stderr);
    const lines = stderr
      .trim()
      .split('\n')
      .filter((line) => line.includes(jobId));
    assert.ok(lines.length >= 2, `a line per change, got: ${stderr}`);
    assert.match(lines[0] ?? '', /outputs, \d+ failed, \d+ in backoff/);
    const json = await cli(['watch', jobId, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const records = json.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { jobId?: string; phase?: string; status?: string });
    assert.equal(records.at(-1)?.status, 'Succeeded', 'the last line is the result');
    assert.ok(records.slice(0, -1).every((record) => record.jobId === jobId && typeof record.phase === 'string'));
  });

  it('flags: a running job by signal, a closed job by the CLI; both found by FaultlineFlagged and list --flagged', async () => {
    const { jobId: running } = await env.client.start(syntheticSpec([{ id: 'slow', params: { cpuMs: 300 } }, { id: 'odd' }], { batchSize: 1, concurrency: 1 }));
    await env.client.handle(running).signal(flagSignal, { item: 'odd', reason: 'looks wrong' });
    const flaggedResult = await env.client.result(running);
    assert.deepEqual(
      flaggedResult.flags?.map(({ item, reason }) => ({ item, reason })),
      [{ item: 'odd', reason: 'looks wrong' }],
    );

    const { jobId: closed } = await env.client.start(syntheticSpec([{ id: 'a' }]));
    await env.client.result(closed);
    await eventually(async () => (await env.client.handle(closed).describe()).status.name === 'COMPLETED', 15_000, 'closed');
    const flagged = await cli(['flag', closed, '--reason', 'customer says the output is blank', '--json']);
    assert.equal(flagged.code, 0, flagged.stderr);
    assert.deepEqual(JSON.parse(flagged.stdout), { jobId: closed, flags: 1, record: `${closed}/flag-1` });
    assert.deepEqual(
      (await env.client.result(closed)).flags?.map((flag) => flag.reason),
      ['customer says the output is blank'],
    );

    const found = async () => {
      const ids: string[] = [];
      for await (const execution of env.client.client.workflow.list({ query: 'FaultlineFlagged = true' })) ids.push(execution.workflowId);
      return ids;
    };
    await eventually(
      async () => {
        const ids = await found();
        return ids.includes(running) && ids.includes(`${closed}/flag-1`);
      },
      15_000,
      "FaultlineFlagged = true finds the running job and the closed job's flag record",
    );
    const listed = await cli(['list', '--flagged', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    const jobs = JSON.parse(listed.stdout) as { jobId: string; flagged: boolean }[];
    for (const jobId of [running, closed])
      assert.ok(
        jobs.some((job) => job.jobId === jobId && job.flagged),
        `${jobId} in list --flagged`,
      );
    assert.ok(jobs.every((job) => job.flagged));
  });

  it('flags on a closed job sent at once are all kept (no flag record replaces another)', async () => {
    const { jobId } = await env.client.start(syntheticSpec([{ id: 'a' }]));
    await env.client.result(jobId);
    await eventually(async () => (await env.client.handle(jobId).describe()).status.name === 'COMPLETED', 15_000, 'closed');
    const reasons = ['first look', 'second look', 'third look', 'fourth look'];
    const records = await Promise.all(reasons.map((reason) => env.client.flag(jobId, { reason })));
    assert.equal(new Set(records.map((record) => record.record)).size, reasons.length, 'each flag has its own record');
    assert.deepEqual((await env.client.result(jobId)).flags?.map((flag) => flag.reason).sort(), [...reasons].sort());
  });

  it('watch in a real terminal (pty): the bar moves, the final line shows the status', async () => {
    // Several seconds of work: `watch` refreshes every 500 ms, and under load a progress query alone can take a second or more.
    const items = Array.from({ length: 200 }, (_, index) => ({ id: `w${index}`, params: { cpuMs: 60 } }));
    const { jobId } = await env.client.start(syntheticSpec(items, { batchSize: 5, concurrency: 2 }));
    // util-linux `script` runs the CLI on a pseudo-terminal, as a person would.
    const command = [process.execPath, path.join(ROOT, 'bin', 'faultline.js'), 'watch', jobId].map((part) => `'${part}'`).join(' ');
    const { stdout } = await run('script', ['-qfec', command, '/dev/null'], { env: { ...env.env, FAULTLINE_LOG_LEVEL: 'error', TERM: 'xterm' }, cwd: env.dir, timeout: 120_000 });
    const screen = stdout.replace(/\u001b\[[0-9;?]*[A-Za-z]/g, '');
    const done = [...screen.matchAll(/\| (\d+)\/200 outputs/g)].map((match) => Number(match[1]));
    assert.ok(new Set(done).size >= 3, `the bar moved: ${JSON.stringify([...new Set(done)])}`);
    assert.ok(
      done.every((value, index) => index === 0 || value >= (done[index - 1] ?? 0)),
      'never backwards',
    );
    assert.equal(Math.max(...done), 200);
    const lastLines = screen
      .trim()
      .split(/\r?\n/)
      .filter((line) => line.trim() !== '');
    assert.ok(
      lastLines.some((line) => line.includes(`job ${jobId}`) && line.includes('Succeeded')),
      'the result line shows the status',
    );
  });
});
