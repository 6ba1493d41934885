/**
 * `faultline dev` as a person uses it: started in a terminal's process group, Ctrl-C (SIGINT to
 * the whole group) stops it cleanly; a second one on a busy port is refused; jobs survive a restart.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePort } from '../../src/devserver/temporal-cli';
import { EncryptionCodec, parsePayloadKey } from '../../src/codec';
import { defaultPayloadConverter } from '@temporalio/common';
import { randomBytes } from 'node:crypto';
import { ROOT, eventually, syntheticSpec, runCli } from '../helpers/env';

const CLI = path.join(ROOT, 'bin', 'faultline.js');
let dir: string;
let ports: { grpc: number; ui: number; web: number };
const running = new Set<ChildProcess>();

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'faultline-dev-'));
  ports = { grpc: await freePort(), ui: await freePort(), web: await freePort() };
});

after(async () => {
  for (const child of running) if (child.pid && child.exitCode === null) process.kill(-child.pid, 'SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

const env = () => ({ ...process.env, TEMPORAL_ADDRESS: `127.0.0.1:${ports.grpc}`, FAULTLINE_LOG_LEVEL: 'warn', FAULTLINE_TASK_QUEUE: 'faultline-dev-test' });

/** `faultline dev` in its own process group, as a terminal runs it; resolves once the dev server is up. */
async function startDev(extra: string[] = [], extraEnv: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcess; output: () => string; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [CLI, 'dev', '--port', String(ports.grpc), '--ui-port', String(ports.ui), '--web-port', String(ports.web), ...extra], {
    cwd: dir,
    env: { ...env(), ...extraEnv },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const check = setInterval(() => {
      if (output.includes('Temporal Web UI:')) {
        clearInterval(check);
        resolve();
      }
    }, 100);
    void exited.then((code) => {
      clearInterval(check);
      reject(new Error(`faultline dev exited (${code}): ${output}`));
    });
  });
  return { child, output: () => output, exited };
}

function cli(args: string[]) {
  return runCli(args, { env: env(), cwd: dir });
}

describe('faultline dev (a real terminal process group)', () => {
  it('runs jobs, refuses a second dev on its port, stops cleanly on Ctrl-C, and keeps jobs across a restart', async () => {
    const dev = await startDev();
    const specFile = path.join(dir, 'spec.json');
    await writeFile(specFile, JSON.stringify(syntheticSpec([{ id: 'a' }, { id: 'b' }])));
    const started = await cli(['start', specFile, '--wait', '--json', '--id', 'dev-kept']);
    assert.equal(started.code, 0, started.stderr);
    assert.equal((JSON.parse(started.stdout) as { status: string }).status, 'Succeeded');
    // Faultline web comes up with dev, on --web-port, linked to the Temporal Web UI.
    await eventually(async () => dev.output().includes('Faultline web:'), 30_000, 'faultline web to start');
    const jobPage = await (await fetch(`http://127.0.0.1:${ports.web}/jobs/dev-kept`)).text();
    assert.match(jobPage, /Succeeded/);
    assert.match(jobPage, new RegExp(`localhost:${ports.ui}/namespaces/default/workflows/dev-kept`));

    const second = spawn(process.execPath, [CLI, 'dev', '--port', String(ports.grpc), '--ui-port', String(ports.ui)], { cwd: dir, env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
    let secondErr = '';
    second.stderr?.on('data', (chunk: Buffer) => (secondErr += chunk.toString()));
    const secondCode = await new Promise<number | null>((resolve) => second.once('exit', (code) => resolve(code)));
    assert.equal(secondCode, 2, secondErr);
    assert.match(secondErr, /^error: port \d+ is already in use/m);
    assert.doesNotMatch(secondErr, /Temporal dev server started/);

    // Ctrl-C: SIGINT to the whole group (dev, its worker and the Temporal server).
    process.kill(-(dev.child.pid ?? 0), 'SIGINT');
    assert.equal(await dev.exited, 0, dev.output());
    assert.doesNotMatch(dev.output(), /IllegalStateError|Not running/);

    const again = await startDev();
    const kept = await cli(['result', 'dev-kept', '--json']);
    assert.equal(kept.code, 0, `the job survived the restart (dev.db): ${kept.stderr}`);
    assert.equal((JSON.parse(kept.stdout) as { status: string }).status, 'Succeeded');
    process.kill(-(again.child.pid ?? 0), 'SIGINT');
    assert.equal(await again.exited, 0, again.output());

    const usage = await cli(['dev', '--db', 'x.db', '--ephemeral']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /not both/);
  });

  it('with FAULTLINE_PAYLOAD_KEY, wires the Web UI to a codec server that decodes with that key', async () => {
    const key = randomBytes(32).toString('hex');
    const dev = await startDev(['--ephemeral'], { FAULTLINE_PAYLOAD_KEY: key });
    try {
      // The UI server may still be binding its port when dev prints its address: wait until it answers.
      let settings: { Codec?: { Endpoint?: string } } = {};
      await eventually(
        async () =>
          fetch(`http://localhost:${ports.ui}/api/v1/settings`).then(
            async (answer) => ((settings = (await answer.json()) as typeof settings), true),
            () => false,
          ),
        30_000,
        'the Web UI to answer',
      );
      const endpoint = settings.Codec?.Endpoint ?? '';
      assert.match(endpoint, /^http:\/\/127\.0\.0\.1:\d+$/, 'the UI knows the codec endpoint');
      const [sealed] = await new EncryptionCodec(parsePayloadKey(key, 'key')).encode([defaultPayloadConverter.toPayload({ item: 'dev-decoded' })]);
      const body = JSON.stringify({
        payloads: [
          { metadata: Object.fromEntries(Object.entries(sealed?.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v).toString('base64')])), data: Buffer.from(sealed?.data ?? []).toString('base64') },
        ],
      });
      const response = await fetch(`${endpoint}/decode`, { method: 'POST', body, headers: { 'content-type': 'application/json', origin: `http://localhost:${ports.ui}` } });
      assert.equal(response.headers.get('access-control-allow-origin'), `http://localhost:${ports.ui}`, 'CORS admits the UI origin');
      const decoded = (await response.json()) as { payloads: { data: string }[] };
      assert.match(Buffer.from(decoded.payloads[0]?.data ?? '', 'base64').toString(), /dev-decoded/);
    } finally {
      process.kill(-(dev.child.pid ?? 0), 'SIGINT');
      assert.equal(await dev.exited, 0, dev.output());
    }
  });
});
