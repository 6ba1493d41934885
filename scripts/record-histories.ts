/**
 * Records histories of the shipped workflows for the replay test into test/histories/<set>/
 * (`npm run record-histories -- <set> [job …]`, default `latest`). Older sets stay as they are: v1 was
 * recorded by the engine before v2, v2 before the retention patch; each must keep replaying.
 * Run after an intended (patched) workflow change.
 *
 * Every run of a workflow is recorded (continue-as-new makes several): `<id>.run<N>.json`, with
 * `__` standing for `/` in child workflow ids.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { closedJobResult } from '../src/client';
import { PATCHES, cancelSignal, flagSignal, pauseSignal, resumeSignal, retrySignal, limiterWorkflowId } from '../src/shared';
import { type TestEnv, createTestEnv, eventually, syntheticSpec } from '../test/helpers/env';
import { patchIdsOf } from '../test/helpers/patches';
import { wordCount } from '../test/fixtures/word-count';
import { crunch } from '../test/fixtures/crunch';
import { ItemError, definePipeline } from '../src';
import { z } from 'zod';

/** A user pipeline whose items can declare a fatal error, a pause that ignores cancellation, or a first run that stalls its worker (recording only). */
const recorderSteps = definePipeline({
  name: 'recorder-steps',
  version: '1',
  outputs: ['out'],
  itemParams: z.object({ sleepMs: z.number().int().optional(), fatal: z.boolean().optional(), stallFirstMs: z.number().int().optional() }),
  steps: [
    {
      name: 'work',
      run: async ({ item, dispatch }) => {
        if (item.params.fatal) throw new ItemError({ type: 'RecorderFatal', class: 'fatal', message: 'declared fatal' });
        // Blocks the worker's event loop: no heartbeat goes out, so the server times the batch out as if its worker were lost.
        if (item.params.stallFirstMs && dispatch === 1) for (const until = Date.now() + item.params.stallFirstMs; Date.now() < until;);
        if (item.params.sleepMs) await new Promise((resolve) => setTimeout(resolve, item.params.sleepMs));
        return { out: { status: 'Available', value: { done: true } } };
      },
    },
  ],
});

const SET = process.argv[2] ?? 'latest';
if (!/^[a-z0-9-]+$/.test(SET)) throw new Error(`history set names are lower-case words, got "${SET}"`);
const OUT = path.resolve(__dirname, '..', 'test', 'histories', SET);

async function recordAllRuns(env: TestEnv, workflowId: string): Promise<number> {
  const runs: { runId: string; start: number }[] = [];
  for await (const execution of env.client.client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) runs.push({ runId: execution.runId, start: execution.startTime.getTime() });
  runs.sort((a, b) => a.start - b.start);
  let events = 0;
  for (const [index, run] of runs.entries()) {
    const history = await env.client.client.workflow.getHandle(workflowId, run.runId).fetchHistory();
    events += history.events?.length ?? 0;
    await writeFile(path.join(OUT, `${workflowId.replaceAll('/', '__')}.run${index + 1}.json`), JSON.stringify(history));
  }
  return events;
}

async function main(): Promise<void> {
  const hooks: string[] = [];
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/items.ndjson') {
      res.writeHead(200).end(Array.from({ length: 25 }, (_, i) => JSON.stringify(i === 12 ? { id: `h${i}`, params: { outcome: 'unprocessable' } } : { id: `h${i}` })).join('\n'));
      return;
    }
    req.resume();
    req.on('end', () => {
      hooks.push(req.url ?? '');
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const hookUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  const env = await createTestEnv({ taskQueue: 'faultline-record', envExtra: { RECORD_WEBHOOK_SECRET: 'recording-secret', FAULTLINE_ALLOWED_HOSTS: '127.0.0.1' } });
  let worker = await env.startWorker({}, { pipelines: [wordCount, recorderSteps, crunch] });
  const out = (name: string) => pathToFileURL(path.join(env.dir, 'out', name)).toString();
  try {
    // `-- <set> <job> …`: only those jobs are recorded again, the set's others kept.
    const only = process.argv.slice(3);
    if (only.length === 0) await rm(OUT, { recursive: true, force: true });
    await mkdir(OUT, { recursive: true });
    const flakyOnce = (id: string) => ({ id, params: { transientFailures: 1 } });
    // expectsPatch: the recording fails unless the job's history took that patch (a moment the recorder aims at and could miss).
    const jobs: Record<string, { spec: unknown; before?: () => Promise<void>; during?: (jobId: string) => Promise<void>; children?: boolean; limiter?: string; expectsPatch?: string }> = {
      mixed: {
        spec: syntheticSpec([{ id: 'ok' }, { id: 'missing', params: { outcome: 'missing' } }, { id: 'bad', params: { outcome: 'unprocessable' } }, flakyOnce('flaky')], {
          retry: { initialInterval: '10ms' },
        }),
      },
      // A job that fits one batch runs it by local activity; its transient failure then runs through the task queue.
      local: { spec: syntheticSpec([{ id: 'a' }, flakyOnce('flaky')], { batchSize: 2, retry: { initialInterval: '10ms' } }) },
      fatal: { spec: syntheticSpec([{ id: 'a' }, { id: 'boom', params: { outcome: 'fatal' } }, { id: 'b' }], { batchSize: 3 }) },
      'cancel-update': {
        spec: syntheticSpec([{ id: 'h', params: { outcome: 'hang' } }, { id: 'ok' }], { heartbeatTimeout: '2s' }),
        during: async (jobId) => {
          await eventually(async () => (await env.client.progress(jobId)).counts.Available === 1, 20_000, 'ok finished');
          await env.client.cancel(jobId, 'recording');
        },
      },
      // A cancel update sent while no worker runs lands in the job's first task with the start: the job
      // answers it in the task where it closes, and the answer leaves in a task of its own first (patch answersBeforeClose).
      'update-answered-at-close': {
        spec: syntheticSpec([{ id: 'a' }, { id: 'b' }]),
        expectsPatch: PATCHES.answersBeforeClose,
        before: async () => worker.stop(),
        during: async (jobId) => {
          const answered = env.client.cancel(jobId, 'answered at close');
          // The server admits the update and holds it for a worker; nothing shows that moment, so the
          // worker comes back a little later, and the recording below checks the patch was taken.
          await new Promise((resolve) => setTimeout(resolve, 500));
          worker = await env.startWorker({}, { pipelines: [wordCount, recorderSteps, crunch] });
          await answered;
        },
      },
      'cancel-temporal': {
        spec: syntheticSpec([{ id: 'h', params: { outcome: 'hang' } }, { id: 'ok' }], { heartbeatTimeout: '2s' }),
        during: async (jobId) => {
          await eventually(async () => (await env.client.progress(jobId)).counts.Available === 1, 20_000, 'ok finished');
          await env.client.handle(jobId).cancel();
        },
      },
      'retry-window-inline': {
        spec: syntheticSpec([{ id: 'ok' }, { id: 'flaky', params: { transientFailures: 2 } }, { id: 'bad', params: { outcome: 'unprocessable' } }], { retry: { maxAttempts: 1 }, retryWindow: '1m' }),
        during: async (jobId) => {
          await env.client.result(jobId);
          await env.client.retry(jobId, { types: ['TransientItemError'] });
          await env.client.result(jobId, { round: 2 });
          await env.client.retry(jobId, { items: ['flaky'] });
          await env.client.result(jobId, { round: 3 });
          // By signal, as the Web UI and `temporal workflow signal` send them: one rejected, then a cancel.
          await env.client.handle(jobId).signal(retrySignal, { types: ['NoSuchType'] });
          await env.client.handle(jobId).signal(cancelSignal, { reason: 'close the window' });
        },
      },
      'sharded-retry': {
        spec: syntheticSpec(
          Array.from({ length: 30 }, (_, i) => (i % 7 === 3 ? { id: `s${i}`, params: { transientFailures: 1 } } : { id: `s${i}` })),
          { shardSize: 10, batchSize: 5, retry: { maxAttempts: 1 }, retryWindow: '1m' },
        ),
        children: true,
        during: async (jobId) => {
          await env.client.result(jobId);
          await env.client.retry(jobId, {});
          await env.client.result(jobId, { round: 2 });
        },
      },
      // Engine v3: the allowance carried across continue-as-new, failures told early, errors cut to budget and stored whole.
      'v3-allowance-rotation': {
        spec: syntheticSpec(
          Array.from({ length: 200 }, (_, i) => (i < 2 || i >= 197 ? { id: `r${i}`, params: { outcome: 'unprocessable' } } : { id: `r${i}` })),
          { shardSize: 10, rotateAfterEvents: 100, toleratedFailureCount: 3 },
        ),
        children: true,
      },
      'v3-early-failures': {
        spec: syntheticSpec(
          Array.from({ length: 60 }, (_, i) => (i % 20 === 0 ? { id: `e${i}`, params: { outcome: 'unprocessable' } } : { id: `e${i}`, params: { cpuMs: 20 } })),
          { shardSize: 20, batchSize: 10, toleratedFailureCount: 1 },
        ),
        children: true,
      },
      'v3-big-errors': {
        spec: syntheticSpec(
          Array.from({ length: 30 }, (_, i) => ({ id: `b${i}`, params: { outcome: 'unprocessable', errorBytes: 200_000, causeDepth: 6 } })),
          { batchSize: 10, toleratedFailurePercent: 100 },
        ),
      },
      'sharded-threshold': {
        spec: syntheticSpec(
          Array.from({ length: 40 }, (_, i) => (i % 10 === 0 ? { id: `t${i}`, params: { outcome: 'unprocessable' } } : { id: `t${i}` })),
          { shardSize: 10, batchSize: 2, toleratedFailureCount: 2 },
        ),
        children: true,
      },
      'archive-webhook': {
        spec: {
          ...syntheticSpec([{ id: 'a' }, { id: 'b' }, { id: 'bad', params: { outcome: 'unprocessable' } }], {
            archive: true,
            webhook: { url: hookUrl, secretRef: 'env:RECORD_WEBHOOK_SECRET' },
          }),
          destination: out('archive-webhook'),
        },
        children: true,
      },
      'pause-set-flag': {
        spec: syntheticSpec(
          Array.from({ length: 40 }, (_, i) => (i === 30 ? { id: `c${i}`, params: { outcome: 'unprocessable' } } : { id: `c${i}`, params: { cpuMs: 20 } })),
          { batchSize: 2, concurrency: 1 },
        ),
        during: async (jobId) => {
          await eventually(async () => (await env.client.progress(jobId)).counts.Available >= 4, 20_000, 'running');
          await env.client.pause(jobId);
          await env.client.handle(jobId).signal(flagSignal, { item: 'c3', reason: 'recording' });
          await env.client.setLimits(jobId, { concurrency: 2, toleratedFailureCount: 0, priority: 2 });
          await env.client.resume(jobId);
        },
      },
      'sharded-paused': {
        spec: syntheticSpec(
          Array.from({ length: 30 }, (_, i) => ({ id: `p${i}`, params: { cpuMs: 20 } })),
          { shardSize: 10, batchSize: 2, concurrency: 1 },
        ),
        children: true,
        during: async (jobId) => {
          await env.client.handle(jobId).signal(pauseSignal);
          await eventually(async () => (await env.client.progress(jobId)).paused === true, 20_000, 'paused');
          await env.client.setLimits(jobId, { concurrency: 2 });
          await env.client.handle(jobId).signal(resumeSignal);
        },
      },
      // The job keeps its progress in its memo while a worker imports its items and assembles its records (patched('faultline-long-step-progress-memo')).
      'v12-import-memo': {
        spec: { pipeline: 'synthetic', itemsFrom: `${hookUrl.replace(/\/hook$/, '')}/items.ndjson`, options: { shardSize: 10 } },
        children: true,
      },
      // A one-item job closes without a housekeeping activity: its only batch released its working copies (patched('faultline-release-in-local-batch')).
      'v13-release-in-batch': {
        spec: syntheticSpec([{ id: 'one' }]),
      },
      // Every patch of PATCH_BASELINE_1 taken with one marker (patched('faultline-patch-baseline-1')), by a job and its slices.
      'v14-baseline-inline': {
        spec: syntheticSpec([{ id: 'one' }, { id: 'bad', params: { outcome: 'unprocessable' } }], { batchSize: 1 }),
      },
      'v14-baseline-sliced': {
        spec: syntheticSpec(
          Array.from({ length: 25 }, (_, i) => (i === 7 ? { id: `s${i}`, params: { outcome: 'unprocessable' } } : { id: `s${i}` })),
          { shardSize: 10, batchSize: 2 },
        ),
        children: true,
      },
      'items-from-https': {
        spec: { pipeline: 'synthetic', itemsFrom: `${hookUrl.replace(/\/hook$/, '')}/items.ndjson`, options: { shardSize: 10 } },
        children: true,
      },
      // Worker-described pipelines: a user's pipeline, retried in place; a cancel answered while a fatal stop drains.
      'v4-user-pipeline': {
        spec: {
          pipeline: 'word-count',
          items: [
            { id: 'a', params: { text: 'a b c' } },
            { id: 'busy', params: { text: 'x y', failTimes: 1 } },
            { id: 'empty', params: { text: ' ' } },
            { id: 'poison', params: { text: 'poison word' } },
          ],
          options: { retryWindow: '1m' },
        },
        during: async (jobId) => {
          await env.client.result(jobId);
          await env.client.retry(jobId, {});
          await env.client.result(jobId, { round: 2 });
          await env.client.cancel(jobId, 'recorded');
        },
      },
      'v4-cancel-after-fatal': {
        spec: {
          pipeline: 'recorder-steps',
          items: [
            { id: 'slow', params: { sleepMs: 4000 } },
            { id: 'boom', params: { fatal: true } },
          ],
          options: { batchSize: 1 },
        },
        during: async (jobId) => {
          await eventually(async () => (await env.client.progress(jobId)).counts.Failed > 0, 20_000, 'the fatal item');
          const answer = await env.client.cancel(jobId, 'after the fatal stop');
          if (answer.effect !== 'stopped') throw new Error(`the cancel was answered ${answer.effect}, not while the round stopped`);
        },
      },
      // A settling round writes its records where options.export says (patched('faultline-result-export')).
      'v4-export': {
        spec: syntheticSpec([{ id: 'a' }, { id: 'bad', params: { outcome: 'unprocessable' } }], { export: { destination: out('export'), format: 'csv' } }),
      },
      // Items out of history: a stored spec's slices name their items by place and keep their records in job storage;
      // slices rotate, one item fails for good, three fail (no retries) and run again in a retry round, by place too.
      // Batches of ~1 s beating every 500 ms: their records go to job storage at heartbeats (storedBeats).
      // Slices keep their counts so far in their memo (progress read from the server, not a worker).
      // The job keeps its progress in its memo while its slices run (held and resumed meanwhile), and drops it when they end.
      // A batch of 12 whose worker stalls past its heartbeat timeout runs again in two batches of 6 (patched('faultline-bisect-lost-batches')).
      'v11-bisect': {
        spec: {
          pipeline: 'recorder-steps',
          items: Array.from({ length: 12 }, (_, i) => ({ id: `s${i}`, params: i === 5 ? { stallFirstMs: 4_000 } : {} })),
          options: { batchSize: 12, heartbeatTimeout: '1s', runLocally: false },
        },
      },
      'v10-job-progress': {
        spec: syntheticSpec(
          Array.from({ length: 60 }, (_, i) => ({ id: `jp-${i}`, params: { cpuMs: 20 } })),
          { shardSize: 20, batchSize: 10, concurrency: 1 },
        ),
        children: true,
        during: async (jobId) => {
          await eventually(async () => (await env.client.progress(jobId)).counts.Available > 0, 20_000, 'the first items');
          await env.client.pause(jobId);
          await env.client.resume(jobId);
        },
      },
      'v9-slice-progress': {
        spec: syntheticSpec(
          Array.from({ length: 60 }, (_, i) => ({ id: `live-${i}`, params: { cpuMs: 2 } })),
          { shardSize: 30, batchSize: 10, concurrency: 1 },
        ),
        children: true,
      },
      'v8-stored-beats': {
        spec: syntheticSpec(
          Array.from({ length: 3_000 }, (_, i) => ({ id: `beat-${i}-`.padEnd(100, 'x'), params: i === 777 ? { outcome: 'unprocessable' } : { cpuMs: 4 } })),
          { shardSize: 1_500, batchSize: 250, heartbeatTimeout: '2s' },
        ),
        children: true,
      },
      'v7-by-place': {
        spec: syntheticSpec(
          Array.from({ length: 3_000 }, (_, i) => {
            const id = `place-${i}-`.padEnd(100, 'x');
            if (i === 1_234) return { id, params: { outcome: 'unprocessable' } };
            return i % 1_000 === 7 ? { id, params: { transientFailures: 1 } } : { id };
          }),
          { shardSize: 1_000, batchSize: 20, rotateAfterEvents: 100, retry: { maxAttempts: 1 }, retryWindow: '1m' },
        ),
        children: true,
        during: async (jobId) => {
          await env.client.result(jobId);
          await env.client.retry(jobId, { types: ['TransientItemError'] });
          const second = await env.client.result(jobId, { round: 2 });
          if (second.counts.items !== 3_000 || second.counts.Failed !== 4) throw new Error(`round 2 counts ${JSON.stringify(second.counts)}`);
          await env.client.cancel(jobId, 'recorded');
        },
      },
      // v19: a fatal item stops the job, which tells its other slice why before cancelling it (PATCHES.sliceStopReason); each stopped slice's items that never ran get their Cancelled records by place (PATCHES.cancelledByPlace).
      'stopped-by-place': {
        spec: syntheticSpec(
          Array.from({ length: 3_000 }, (_, i) => ({ id: `stop-${i}-`.padEnd(100, 'x'), ...(i === 60 ? { params: { outcome: 'fatal' as const } } : {}) })),
          { shardSize: 1_500, batchSize: 50, concurrency: 1 },
        ),
        children: true,
        expectsPatch: PATCHES.cancelledByPlace,
      },
      // work: 'cpu' (v16, recorded when the fixture was named recorder-cpu): a job of 1,200 items in one slice of guided batches; one of 40 run inline the same way.
      // v17: the same sliced job with at most CPU_WORK_SIZES.batchesAhead batches in flight (PATCHES.guidedInFlight).
      // v18: its spec check counted the fleet (plan.cpuSlots: one process, two slots): two in flight, each half the queue within the batch size.
      // v20: its first two batches, started together, shrink one after the other (PATCHES.staggeredFirstWave).
      'cpu-sliced': {
        spec: { pipeline: 'crunch', items: Array.from({ length: 1_200 }, (_, i) => ({ id: `c${i}`, params: { n: i } })) },
        children: true,
        expectsPatch: PATCHES.staggeredFirstWave,
      },
      'cpu-inline': { spec: { pipeline: 'crunch', items: Array.from({ length: 40 }, (_, i) => ({ id: `c${i}`, params: { n: i } })) } },
      rotation: {
        spec: syntheticSpec(
          Array.from({ length: 40 }, (_, i) => flakyOnce(`r${i}`)),
          { batchSize: 1, concurrency: 4, rotateAfterEvents: 100, retry: { initialInterval: '10ms' } },
        ),
      },
    };
    const deliverHost = new URL(hookUrl).host;
    // Items wait for leases of their host's limiter, whose history is recorded with the job's.
    jobs['rate-limited'] = {
      spec: {
        pipeline: 'deliver',
        params: { url: hookUrl.replace(/\/hook$/, '/deliver') },
        items: Array.from({ length: 6 }, (_, i) => ({ id: `r${i}`, params: { record: { n: i } } })),
        options: { rateLimits: { [deliverHost]: { perSecond: 5, concurrency: 2 } } },
      },
      during: async () => {
        await eventually(async () => (await env.client.rateLimiters()).some((view) => view.key === deliverHost), 20_000, 'the limiter started');
      },
      limiter: limiterWorkflowId(deliverHost),
    };
    for (const [name, { spec, before, during, children, limiter, expectsPatch }] of Object.entries(jobs)) {
      if (only.length > 0 && !only.includes(name)) continue;
      const jobId = `rec-${name}`;
      if (before) await before();
      await env.client.start(spec, { jobId });
      if (during) await during(jobId);
      await closedJobResult(env.client.client.workflow.getHandle(jobId));
      let events = await recordAllRuns(env, jobId);
      const childIds = new Set<string>();
      if (children) {
        for await (const child of env.client.client.workflow.list({ query: `WorkflowId STARTS_WITH '${jobId}/'` })) childIds.add(child.workflowId);
        for (const childId of childIds) events += await recordAllRuns(env, childId);
      }
      if (limiter) events += await recordAllRuns(env, limiter);
      // The patch may be taken by the job or by one of its slices.
      const taken = async (workflowId: string) => patchIdsOf((await env.client.handle(workflowId).fetchHistory()).events ?? []).includes(expectsPatch ?? '');
      if (expectsPatch && !(await taken(jobId)) && !(await Promise.all([...childIds].map(taken))).includes(true))
        throw new Error(`${jobId}: patch ${expectsPatch} was not taken (the moment it needs was missed); record it again`);
      console.log(`recorded ${jobId}: ${events} events`);
    }
    if (hooks.length === 0 && (only.length === 0 || only.includes('archive-webhook'))) throw new Error('the webhook was never delivered');
  } finally {
    await worker.stop();
    await env.teardown();
    server.close();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
