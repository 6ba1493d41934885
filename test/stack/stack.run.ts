/**
 * `npm run test:stack` (run by .ci/run, not by `npm test`): against the production-like stack —
 * PostgreSQL + the Temporal server and Web UI built from their Go modules + MinIO holding job storage +
 * `faultline worker --processes 2` — a sharded job whose items a worker reads from the bucket
 * (`itemsFrom`) runs with transient failures through a worker SIGKILL and a Temporal server
 * SIGKILL + restart, and ends with exact accounting: every item's output once, every file whole.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Connection } from '@temporalio/client';
import { FaultlineClient } from '../../src/client';
import { loadConfig } from '../../src/config';
import { workerChildren } from '../helpers/processes';
import { STACK_S3, ensureBinaries, stackLayout, stackWorkerSettings, startStack, startTemporal, stopStack, workerEnv } from '../../scripts/stack';

const dir = path.join(os.tmpdir(), `faultline-stack-test-${process.pid}`);
const options = { dir, port: 18233, pgPort: 15433, s3Port: 19100, uiPort: 18180, webPort: 18334, metricsPort: 19564, workers: 2, log: (line: string) => console.error(`[stack] ${line}`) };
let client: FaultlineClient;
let connection: Connection;
let out: string;

before(async () => {
  await stopStack(options).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
  await startStack(options);
  out = await mkdtemp(path.join(dir, 'out-'));
  const layout = stackLayout(options);
  const config = loadConfig(workerEnv(layout), dir);
  connection = await Connection.connect({ address: layout.address });
  client = await FaultlineClient.connect({ config, connection });
});

after(async () => {
  await client?.close();
  await connection?.close();
  await stopStack(options);
  await rm(dir, { recursive: true, force: true });
});

describe('the production-like stack (PostgreSQL + Temporal server from its Go module)', () => {
  it('a sharded job survives a worker SIGKILL and a server SIGKILL + restart with exact accounting', async () => {
    const layout = stackLayout(options);
    const items = Array.from({ length: 3_000 }, (_, i) => ({ id: `s${i}`, params: { cpuMs: 3, ...(i % 100 === 0 ? { transientFailures: 1 } : {}) } }));
    const settings = stackWorkerSettings(layout);
    const bucket = new S3Client({
      endpoint: settings.FAULTLINE_S3_ENDPOINT,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: STACK_S3.accessKeyId, secretAccessKey: STACK_S3.secretAccessKey },
    });
    await bucket.send(new PutObjectCommand({ Bucket: STACK_S3.bucket, Key: 'inputs/stack.ndjson', Body: items.map((item) => JSON.stringify(item)).join('\n') }));
    bucket.destroy();
    const { jobId } = await client.start({
      pipeline: 'synthetic',
      itemsFrom: `s3://${STACK_S3.bucket}/inputs/stack.ndjson`,
      destination: pathToFileURL(out).toString(),
      options: { heartbeatTimeout: '5s', crashBudget: 10 },
    });

    const supervisor = Number(readFileSync(path.join(layout.pids, 'workers.pid'), 'utf8'));
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const [victim] = workerChildren(supervisor);
    assert.ok(victim, 'a worker process to kill');
    process.kill(victim, 'SIGKILL');

    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const temporal = Number(readFileSync(path.join(layout.pids, 'temporal.pid'), 'utf8'));
    process.kill(temporal, 'SIGKILL');
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    await startTemporal(layout, ensureBinaries(layout, () => undefined).server);

    let result;
    for (const deadline = Date.now() + 240_000; ;) {
      try {
        if ((await client.jobState(jobId)).kind === 'closed') {
          result = await client.result(jobId);
          break;
        }
      } catch {
        // the server is still coming back
      }
      assert.ok(Date.now() < deadline, 'the job closed within 4 minutes');
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
    assert.equal(result.status, 'Succeeded', JSON.stringify(result.errors[0] ?? null));
    assert.deepEqual([result.counts.items, result.counts.outputs, result.counts.Available], [3_000, 3_000, 3_000]);
    assert.match(result.manifest ?? '', /^s3:\/\/faultline\/jobs\/jobs\//, 'the manifest is in the bucket');
    const records = await client.records(result);
    assert.equal(records.length, 3_000);
    assert.equal(new Set(records.map((record) => record.item)).size, 3_000, 'every item exactly once');
    for (const record of records.slice(0, 3_000)) {
      const data = await readFile(fileURLToPath(record.location ?? ''));
      assert.equal(createHash('sha256').update(data).digest('hex'), record.sha256, `${record.item} whole`);
    }
    assert.equal(readdirSync(out).length, 3_000, 'nothing else in the destination');

    // The stack's Web UI server (built from its Go module) shows the job through its API.
    const described = (await (await fetch(`http://127.0.0.1:${layout.uiPort}/api/v1/namespaces/default/workflows/${jobId}`)).json()) as {
      workflowExecutionInfo?: { status?: string; type?: { name?: string } };
    };
    assert.deepEqual([described.workflowExecutionInfo?.type?.name, described.workflowExecutionInfo?.status], ['jobWorkflow', 'WORKFLOW_EXECUTION_STATUS_COMPLETED']);

    // Faultline web shows the job, its items read from the manifest in MinIO.
    const page = await (await fetch(`http://127.0.0.1:${layout.webPort}/jobs/${jobId}?status=Available`)).text();
    assert.match(page, /Succeeded/);
    assert.match(page, /href="\/jobs\/[^"]+\/items\/s\d+"/, 'items listed from the manifest');
    // Each worker process serves /metrics (the first on metricsPort, the next on +1); together they counted items.
    let available = 0;
    for (const port of [layout.metricsPort, layout.metricsPort + 1]) {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      available += Number(/^faultline_items_total\{pipeline="synthetic",status="Available"\} (\d+)$/m.exec(text)?.[1] ?? 0);
      assert.match(text, /^temporal_/m, "the SDK's metrics too");
    }
    assert.ok(available > 0, 'items counted by the workers (the killed one started over)');
  });
});
