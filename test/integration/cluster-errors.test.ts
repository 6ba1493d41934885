/**
 * Against a namespace without Faultline's search attributes (a fresh cluster), the worker, `start`
 * and `list` each say so in one line with the commands that register them — not Temporal's bare
 * "Failed to start Workflow", not "no jobs".
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ensureTemporalCli, freePort, isReachable } from '../../src/devserver/temporal-cli';
import { eventually, runCli } from '../helpers/env';

let server: ChildProcess;
let address = '';
let dir = '';

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'faultline-cluster-'));
  const port = await freePort();
  address = `127.0.0.1:${port}`;
  // A bare dev server: no --search-attribute flags, like a fresh self-hosted cluster.
  server = spawn(ensureTemporalCli(), ['server', 'start-dev', '--headless', '--ip', '127.0.0.1', '--port', String(port), '--log-level', 'error'], { stdio: 'ignore' });
  process.once('exit', () => server.kill('SIGKILL'));
  await eventually(() => isReachable(address, 500), 60_000, 'bare dev server');
});
after(async () => {
  server.kill('SIGTERM');
  await rm(dir, { recursive: true, force: true });
});

function cli(args: string[]) {
  const env = { ...process.env, TEMPORAL_ADDRESS: address, FAULTLINE_STORAGE: path.join(dir, 'storage'), FAULTLINE_ALLOWED_ROOTS: dir, FAULTLINE_LOG_FORMAT: 'json' };
  return runCli(args, { env, cwd: dir, timeout: 120_000 });
}

const MISSING =
  /^error: namespace default lacks Faultline's search attributes FaultlineStatus, FaultlineHasErrors, FaultlineFailedCount, FaultlinePipeline, FaultlineFlagged, FaultlineTenant, FaultlinePriority; register them once: temporal operator search-attribute create --namespace default --name FaultlineStatus --type Keyword && /m;

describe('a namespace without the search attributes', () => {
  it('the worker refuses to start, start and list refuse, each in one line naming the fix', async () => {
    const worker = await cli(['worker', '--processes', '1']);
    assert.equal(worker.code, 2, worker.stderr);
    assert.match(worker.stderr, MISSING);

    await writeFile(path.join(dir, 'spec.json'), JSON.stringify({ pipeline: 'synthetic', items: [{ id: 'a' }] }));
    const started = await cli(['start', 'spec.json']);
    assert.equal(started.code, 2, started.stderr);
    assert.match(started.stderr, MISSING);
    assert.match(started.stderr, /^ {2}cause: /m, "Temporal's own reason follows");

    const listed = await cli(['list', '--json']);
    assert.equal(listed.code, 2, listed.stderr);
    assert.match(listed.stderr, MISSING);
  });
});
