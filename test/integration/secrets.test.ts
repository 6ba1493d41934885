/**
 * Planted secrets — a path token and a query token in a source URL, a pre-signed PUT signature,
 * a webhook URL with a path and a query token, the webhook's signing secret — appear in no result,
 * no worker log (debug level) and no raw history or description, whether deliveries succeed or
 * fail. Payloads are encrypted (FAULTLINE_PAYLOAD_KEY), so what the history shows in clear is only
 * what Temporal keeps outside payloads: failure messages, search attributes, ids.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { ROOT, type TestEnv, type WorkerProcess, createTestEnv, eventually } from '../helpers/env';
import { everyText } from '../helpers/processes';

const token = (prefix: string) => `${prefix}${randomBytes(12).toString('hex')}`;
const SECRETS = {
  sourcePath: token('srcpath'),
  sourceQuery: token('srcq'),
  putSignature: token('putsig'),
  // 15 characters: below any length heuristic, as a short Slack/Discord/Teams path token can be.
  hookPath: `hp${randomBytes(8).toString('hex').slice(0, 13)}`,
  hookQuery: token('hookq'),
  webhookSecret: token('whsecret'),
};

let env: TestEnv;
let workers: WorkerProcess;
let server: http.Server;
let base = '';
const received = { puts: 0, hooks: 0, signedHooks: 0, sources: 0 };

before(async () => {
  const image = await readFile(path.join(ROOT, 'samples', 'images', 'with-exif.jpg'));
  server = http.createServer((req, res) => {
    const url = req.url ?? '';
    req.resume();
    if (url.startsWith('/ok-src/')) {
      received.sources += 1;
      return void res.writeHead(200, { 'content-type': 'image/jpeg' }).end(image);
    }
    if (url.startsWith('/bad-src/')) return void res.writeHead(500).end();
    if (req.method === 'PUT') {
      received.puts += 1;
      return void res.writeHead(url.startsWith('/ok-put/') ? 200 : 403).end();
    }
    if (url.startsWith('/ok-hook/') || url.startsWith('/bad-hook/')) {
      received.hooks += 1;
      if (req.headers['faultline-signature']) received.signedHooks += 1;
      return void res.writeHead(url.startsWith('/ok-hook/') ? 204 : 500).end();
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  env = await createTestEnv({
    taskQueue: 'faultline-secrets',
    envExtra: { FAULTLINE_PAYLOAD_KEY: randomBytes(32).toString('hex'), FAULTLINE_ALLOWED_HOSTS: '127.0.0.1', FAULTLINE_LOG_LEVEL: 'debug' },
  });
  workers = env.spawnWorker();
});

after(async () => {
  await env?.teardown();
  server?.close();
});

function spec(kind: 'ok' | 'bad-put' | 'bad-src') {
  const hook = kind === 'ok' ? 'ok-hook' : 'bad-hook';
  return {
    pipeline: 'images',
    items: [
      {
        id: 'photo',
        source: `${base}/${kind === 'bad-src' ? 'bad-src' : 'ok-src'}/${SECRETS.sourcePath}/photo.jpg?sig=${SECRETS.sourceQuery}`,
        putUrls: { thumbnail: `${base}/${kind === 'bad-put' ? 'bad-put' : 'ok-put'}/photo.webp?X-Amz-Signature=${SECRETS.putSignature}` },
      },
    ],
    outputs: ['thumbnail'],
    destination: pathToFileURL(path.join(env.dir, 'out', kind)).toString(),
    options: {
      retry: { maxAttempts: 2, initialInterval: '100ms' },
      webhook: { url: `${base}/${hook}/${SECRETS.hookPath}?token=${SECRETS.hookQuery}`, secret: SECRETS.webhookSecret },
    },
  };
}

describe('secrets stay out of results, logs and histories', () => {
  it('whether deliveries succeed or fail', async () => {
    const jobs = await Promise.all((['ok', 'bad-put', 'bad-src'] as const).map(async (kind) => ({ kind, ...(await env.client.start(spec(kind))) })));
    const places: { where: string; text: string }[] = [];
    for (const job of jobs) {
      // Webhooks are delivered as the job closes: read the final result.
      await eventually(async () => (await env.client.jobState(job.jobId)).kind === 'closed', 60_000, `${job.kind} closed`);
      const result = await env.client.result(job.jobId);
      const notification = result.notifications?.[0];
      if (job.kind === 'ok') assert.deepEqual([result.status, notification?.delivered], ['Succeeded', true]);
      else assert.deepEqual([result.status === 'Succeeded', notification?.delivered], [false, false], `${job.kind}: ${result.status}`);
      places.push({ where: `${job.kind} result`, text: JSON.stringify(result) + JSON.stringify(await env.client.records(result)) });
      const handle = env.connection.workflowService;
      const history = await handle.getWorkflowExecutionHistory({ namespace: 'default', execution: { workflowId: job.jobId } });
      const description = await handle.describeWorkflowExecution({ namespace: 'default', execution: { workflowId: job.jobId } });
      places.push({ where: `${job.kind} history`, text: everyText(history).join('\n') + everyText(description).join('\n') });
    }
    // The receivers really got the secrets: the test would be empty otherwise.
    assert.ok(received.sources >= 2 && received.puts >= 2 && received.hooks >= 3 && received.signedHooks === received.hooks, JSON.stringify(received));
    await eventually(() => workers.logs.includes('webhook delivery failed'), 30_000, 'worker logs of the failed webhook');
    places.push({ where: 'worker logs', text: workers.logs });
    assert.match(workers.logs, /REDACTED/, 'the logs name the URLs, redacted');
    for (const { where, text } of places) {
      for (const [name, secret] of Object.entries(SECRETS)) assert.ok(!text.includes(secret), `${name} found in ${where}`);
    }
  });
});
