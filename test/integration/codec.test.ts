/**
 * Payload encryption: with FAULTLINE_PAYLOAD_KEY set, no history or memo holds readable job data;
 * the client and `faultline result` show it; `faultline codec-server` decodes it for the Web UI,
 * which a headless browser proves by reading a job's input and result on its page.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { chromium } from 'playwright-core';
import { EncryptionCodec, parsePayloadKey, payloadKeyId } from '../../src/codec';
import { type CodecServer, startCodecServer, uiOrigins } from '../../src/codec-server';
import { type FaultlineClient } from '../../src/client';
import { loadConfig } from '../../src/config';
import { type DevServer, PortTaken, freePort, startDevServer } from '../../src/devserver/temporal-cli';
import { ROOT, syntheticSpec } from '../helpers/env';
import { everyText, workerAndClient } from '../helpers/processes';

const run = promisify(execFile);
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((candidate) => existsSync(candidate));
const KEY = randomBytes(32).toString('hex');
const OLD_KEY = randomBytes(32).toString('hex');
const MARKER = 'PHI-patient-4711';

describe('payload codec', () => {
  it('round-trips, rotates keys and refuses what it cannot decrypt', async () => {
    const oldCodec = new EncryptionCodec(parsePayloadKey(OLD_KEY, 'old'));
    const codec = new EncryptionCodec(parsePayloadKey(KEY, 'key'), [parsePayloadKey(OLD_KEY, 'old')]);
    const payload = defaultPayloadConverter.toPayload({ item: MARKER });
    const [sealed] = await oldCodec.encode([payload]);
    assert.ok(sealed);
    assert.doesNotMatch(everyText(sealed).join(' '), new RegExp(MARKER));
    assert.equal(Buffer.from(sealed.metadata?.['encryption-key-id'] ?? []).toString(), payloadKeyId(parsePayloadKey(OLD_KEY, 'old')));
    const [opened] = await codec.decode([sealed]);
    assert.deepEqual(defaultPayloadConverter.fromPayload(opened as never), { item: MARKER }, 'an old key still decrypts after rotation');
    const [resealed] = await codec.encode([payload]);
    await assert.rejects(oldCodec.decode([resealed as never]), /which this process does not hold; add it to FAULTLINE_PAYLOAD_KEYS_OLD/);
    const tampered = { ...resealed, data: Buffer.from(resealed?.data ?? []).map((byte, index) => (index === 20 ? byte ^ 1 : byte)) };
    await assert.rejects(codec.decode([tampered]), /failed authentication/);
    assert.deepEqual(await codec.decode([payload]), [payload], 'plain payloads from before encryption pass through');
    assert.throws(() => parsePayloadKey('abc', 'FAULTLINE_PAYLOAD_KEY'), /FAULTLINE_PAYLOAD_KEY must be 32 bytes/);
  });
});

describe('encrypted jobs (dev server with the Web UI wired to the codec server)', () => {
  let server: DevServer;
  let codecServer: CodecServer;
  let client: FaultlineClient;
  let stopWorker: () => Promise<void>;
  let env: NodeJS.ProcessEnv;
  const token = randomBytes(8).toString('hex');

  before(async () => {
    const codec = new EncryptionCodec(parsePayloadKey(KEY, 'key'));
    // The codec server must know the UI's port before the dev server binds it; a port taken in between is tried again.
    for (let attempt = 1; ; attempt++) {
      const uiPort = await freePort();
      codecServer = await startCodecServer({ codec, port: 0, origins: uiOrigins(uiPort) });
      try {
        server = await startDevServer({ ui: true, uiPort, uiCodecEndpoint: codecServer.url });
        break;
      } catch (error) {
        await codecServer.close();
        if (attempt >= 3 || !(error instanceof PortTaken)) throw error;
      }
    }
    env = {
      ...process.env,
      TEMPORAL_ADDRESS: server.address,
      FAULTLINE_TASK_QUEUE: 'faultline-codec',
      FAULTLINE_LOG_LEVEL: 'error',
      FAULTLINE_PAYLOAD_KEY: KEY,
      FAULTLINE_STORAGE: path.join(ROOT, 'test-artifacts', 'codec-storage'),
    };
    const started = await workerAndClient(loadConfig(env, ROOT));
    client = started.client;
    stopWorker = started.stop;
  });
  after(async () => {
    await stopWorker?.();
    await server?.stop();
    await codecServer?.close();
  });

  it('no history or memo holds job data; the client, the CLI and the codec server show it', async () => {
    const { jobId } = await client.start(
      syntheticSpec(
        [
          { id: MARKER, params: { cpuMs: 1 } },
          { id: 'broken', params: { outcome: 'unprocessable' } },
        ],
        {},
        { labels: { patient: MARKER } },
      ),
      {
        jobId: `codec-${Date.now()}`,
      },
    );
    const result = await client.result(jobId);
    assert.equal(result.status, 'PartiallySucceeded');
    assert.ok(JSON.stringify(result).includes(MARKER), 'the client decrypts the result');

    // What the server holds, read without the key.
    const connection = await Connection.connect({ address: server.address });
    try {
      const plain = new Client({ connection });
      const handle = plain.workflow.getHandle(jobId);
      const history = await handle.fetchHistory();
      // The raw description (memo, search attributes, user metadata), not decoded: describe() itself fails on encrypted memo without the key.
      const description = await connection.workflowService.describeWorkflowExecution({ namespace: 'default', execution: { workflowId: jobId } });
      await assert.rejects(handle.describe(), /Unknown encoding: binary\/encrypted/);
      const stored = everyText(history).join('\n') + everyText(description).join('\n');
      assert.doesNotMatch(stored, new RegExp(MARKER), 'no history event, memo or summary holds the marker');
      assert.match(stored, /binary\/encrypted/);
      assert.ok(JSON.stringify(await handle.result().catch(() => 'unreadable')).includes(MARKER) === false, 'a client without the key reads no job data');

      // The codec server turns a history payload back into it (with the token when one is required).
      const input = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
      assert.ok(input);
      const body = JSON.stringify({
        payloads: [
          { metadata: Object.fromEntries(Object.entries(input.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v).toString('base64')])), data: Buffer.from(input.data ?? []).toString('base64') },
        ],
      });
      const guarded = await startCodecServer({ codec: new EncryptionCodec(parsePayloadKey(KEY, 'key')), port: 0, origins: [], token });
      try {
        const refused = await fetch(`${guarded.url}/decode`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
        assert.equal(refused.status, 401);
        const decoded = (await (await fetch(`${guarded.url}/decode`, { method: 'POST', body, headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` } })).json()) as {
          payloads: { data: string }[];
        };
        assert.ok(
          Buffer.from(decoded.payloads[0]?.data ?? '', 'base64')
            .toString()
            .includes(MARKER),
        );
      } finally {
        await guarded.close();
      }
    } finally {
      await connection.close();
    }

    const cli = await run(process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), 'result', jobId, '--json'], { env, cwd: ROOT }).catch((error: { stdout: string; stderr: string }) => error);
    assert.ok(cli.stdout.includes(MARKER), `faultline result shows the decrypted result: ${cli.stderr}`);
    const keyless = await run(process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), 'result', jobId, '--json'], { env: { ...env, FAULTLINE_PAYLOAD_KEY: '' }, cwd: ROOT }).catch(
      (error: { stdout: string; stderr: string; code: number }) => error,
    );
    assert.ok(!keyless.stdout.includes(MARKER), 'without the key the CLI shows no job data');
  });

  it('the Web UI decodes a job through the codec server', { skip: CHROMIUM ? false : 'chromium is not installed (apt-get install chromium)' }, async () => {
    const { jobId } = await client.start(syntheticSpec([{ id: `${MARKER}-ui` }]), { jobId: `codec-ui-${Date.now()}` });
    await client.result(jobId);
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'] });
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    try {
      await page.goto(`${server.uiUrl}/namespaces/default/workflows/${jobId}`, { waitUntil: 'networkidle' });
      await page.getByText(`${MARKER}-ui`).first().waitFor({ timeout: 60_000 });
    } finally {
      await mkdir(path.join(ROOT, 'test-artifacts'), { recursive: true });
      await page.screenshot({ path: path.join(ROOT, 'test-artifacts', 'webui-codec.png'), fullPage: true });
      await browser.close();
    }
  });
});
