/**
 * Error classes at the edges: write errors by errno, Retry-After on 503 (sources and webhooks),
 * and ItemError keeping the underlying error as its cause chain.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, readdir, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { httpStatusError } from '../../src/activities/fetch';
import { writeError, writeOutputFile } from '../../src/activities/files';
import { createNotifyActivities } from '../../src/activities/notify';
import { ItemError } from '../../src/activities/types';
import { queryProblem } from '../../src/client';
import { ErrorTypes, type JobResult } from '../../src/shared';
import { PathMismatch, verifyDescriptorWithin, writeFileAtomic } from '../../src/storage';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'faultline-edges-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const errno = (code: string) => Object.assign(new Error(`${code}: simulated`), { code });

describe('write errors', () => {
  it('a full disk is transient; a read-only, forbidden or blocked destination is fatal; both keep the errno error as cause', () => {
    for (const [code, type, errorClass] of [
      ['ENOSPC', ErrorTypes.DiskFull, 'transient'],
      ['EDQUOT', ErrorTypes.DiskFull, 'transient'],
      ['EROFS', ErrorTypes.DestinationUnwritable, 'fatal'],
      ['EACCES', ErrorTypes.DestinationUnwritable, 'fatal'],
      ['EPERM', ErrorTypes.DestinationUnwritable, 'fatal'],
    ] as const) {
      const error = writeError(errno(code), '/out/a/thumbnail.webp', 'deliver');
      assert.ok(error instanceof ItemError, code);
      assert.equal(error.report.type, type);
      assert.equal(error.report.class, errorClass);
      assert.equal(error.report.step, 'deliver');
      assert.equal((error.report.details.cause as { message: string }).message, `${code}: simulated`);
    }
    const other = errno('EIO');
    assert.equal(writeError(other, '/out/a', 'deliver'), other, 'an errno that says nothing about the destination stays as it is');
  });

  it('a destination item path blocked by a file is DestinationUnwritable (real EEXIST from mkdir)', async () => {
    await writeFile(path.join(dir, 'blocked'), 'a file where the item directory should be');
    await assert.rejects(writeOutputFile(dir, 'blocked', 'result.json', '{}', 'work'), (error: unknown) => {
      assert.ok(error instanceof ItemError);
      assert.equal(error.report.type, ErrorTypes.DestinationUnwritable);
      assert.equal(error.report.class, 'fatal');
      assert.equal(error.report.details.code, 'EEXIST');
      assert.equal(error.report.step, 'work');
      return true;
    });
  });
});

describe('descriptor-safe writes', () => {
  it('many writers of one target at once all succeed (other jobs may share a destination)', async () => {
    const target = path.join(dir, 'shared', 'out.json');
    await Promise.all(Array.from({ length: 20 }, (_, i) => writeFileAtomic(target, `{"writer":${i}}`)));
    assert.match(await readFile(target, 'utf8'), /^\{"writer":\d+\}$/);
    assert.deepEqual(await readdir(path.dirname(target)), ['out.json'], 'no temp file left behind');
  });

  it("sweeps a crashed writer's temp file of the same target, never a live writer's", async () => {
    const target = path.join(dir, 'sweep', 'out.json');
    await mkdir(path.dirname(target), { recursive: true });
    const host = os.hostname().replace(/[^A-Za-z0-9]/g, '_');
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    const crashed = `out.json.tmp-${host}-${dead}-0123456789ab`;
    const live = `out.json.tmp-${host}-${process.ppid}-0123456789ab`;
    await writeFile(path.join(dir, 'sweep', crashed), 'half');
    await writeFile(path.join(dir, 'sweep', live), 'in progress');
    await writeFileAtomic(target, 'whole');
    assert.deepEqual((await readdir(path.dirname(target))).sort(), [live, 'out.json'].sort());
  });

  it('an item directory planted as a symlink out of the destination is refused, and nothing is written there', async () => {
    const destination = await realpath(await mkdtemp(path.join(dir, 'dest-')));
    const elsewhere = await mkdtemp(path.join(dir, 'elsewhere-'));
    await symlink(elsewhere, path.join(destination, 'victim'));
    await assert.rejects(writeOutputFile(destination, 'victim', 'result.json', '{}', 'work'), (error: unknown) => {
      assert.ok(error instanceof ItemError);
      assert.equal(error.report.type, ErrorTypes.DestinationUnwritable);
      assert.equal(error.report.details.code, 'EFAULTLINEPATH');
      return true;
    });
    assert.deepEqual(await readdir(elsewhere), [], 'not even a temp file outside');
  });

  it('checks where an open descriptor really is', async () => {
    const real = await realpath(await mkdtemp(path.join(dir, 'real-')));
    await writeFile(path.join(real, 'f'), 'x');
    await symlink(real, path.join(dir, 'link'));
    const handle = await open(path.join(dir, 'link', 'f'), 'r');
    try {
      await verifyDescriptorWithin(handle.fd, path.join(real, 'f'), real);
      await assert.rejects(verifyDescriptorWithin(handle.fd, path.join(dir, 'link', 'f'), path.join(dir, 'link')), PathMismatch);
    } finally {
      await handle.close();
    }
  });
});

describe('Retry-After', () => {
  it('is honoured for 503 as for 429, and not invented for other statuses', () => {
    const unavailable = httpStatusError(503, 'https://img.example/a.jpg', 'fetch', { 'retry-after': '7' });
    assert.equal(unavailable?.report.type, ErrorTypes.EndpointUnavailable);
    assert.equal(unavailable?.retryAfterMs, 7_000);
    assert.equal(unavailable?.report.details.retryAfterMs, 7_000);
    assert.equal(httpStatusError(429, 'https://img.example/a.jpg', 'fetch', { 'retry-after': '2' })?.retryAfterMs, 2_000);
    assert.equal(httpStatusError(500, 'https://img.example/a.jpg', 'fetch', { 'retry-after': '7' })?.retryAfterMs, undefined);
    assert.equal(httpStatusError(503, 'https://img.example/a.jpg', 'fetch')?.retryAfterMs, undefined);
  });

  it('a webhook receiver answering 503 with Retry-After is retried no sooner than it asked', async () => {
    const arrivals: number[] = [];
    const server = http.createServer((req, res) => {
      arrivals.push(Date.now());
      req.resume();
      if (arrivals.length === 1) res.writeHead(503, { 'retry-after': '1' }).end();
      else res.writeHead(204).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const notify = createNotifyActivities({ allowedHosts: ['127.0.0.1'], env: { HOOK_SECRET: 's' }, logger: pino({ level: 'silent' }), retryDelaysMs: [10, 10] });
      const notification = await notify.deliverWebhook({ webhook: { url: `http://127.0.0.1:${port}/hook`, secretRef: 'env:HOOK_SECRET' }, result: { jobId: 'j', round: 1 } as JobResult });
      assert.equal(notification.delivered, true);
      assert.equal(notification.attempts, 2);
      assert.ok((arrivals[1] ?? 0) - (arrivals[0] ?? 0) >= 950, `waited ${(arrivals[1] ?? 0) - (arrivals[0] ?? 0)} ms, not the 10 ms schedule`);
    } finally {
      server.close();
    }
  });
});

describe('ItemError', () => {
  it('keeps the underlying error chain as nested reports', () => {
    const decoder = new Error('VipsJpeg: premature end of input', { cause: new Error('read 0 bytes') });
    const error = new ItemError({ type: ErrorTypes.CorruptImage, message: 'the image is corrupt or truncated', step: 'process', cause: decoder });
    const cause = error.report.details.cause as { message: string; details: { cause?: { message: string } } };
    assert.equal(cause.message, 'VipsJpeg: premature end of input');
    assert.equal(cause.details.cause?.message, 'read 0 bytes');
    assert.equal(error.cause, decoder);
  });
});

describe('visibility query shapes, pointed at in the user text', () => {
  it('finds unclosed strings and parentheses, a stray ), and ==; accepts good queries', () => {
    assert.deepEqual(queryProblem("WorkflowId = 'a"), { at: 13, message: "the string opened here with ' is never closed" });
    assert.deepEqual(queryProblem("(FaultlineStatus = 'Failed'"), { at: 0, message: 'this ( is never closed' });
    assert.deepEqual(queryProblem("FaultlineStatus = 'Failed')"), { at: 26, message: 'this ) closes no (' });
    assert.equal(queryProblem("FaultlineStatus == 'Failed'")?.at, 16);
    assert.equal(queryProblem("WorkflowId IN ('a', 'b)c') AND (FaultlineHasErrors = true OR FaultlinePipeline = \"x\")"), undefined);
  });
});
