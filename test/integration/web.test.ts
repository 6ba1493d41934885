import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { type FaultlineClient } from '../../src/client';
import { loadConfig } from '../../src/config';
import { type DevServer, startDevServer } from '../../src/devserver/temporal-cli';
import { type WebServer, WebRefused, startWebServer } from '../../src/web/server';
import { ROOT, eventually, syntheticSpec } from '../helpers/env';
import { workerAndClient } from '../helpers/processes';

// Debian's chromium only; a browser is never downloaded.
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((candidate) => existsSync(candidate));
const ARTIFACTS = path.join(ROOT, 'test-artifacts');
const chromiumMissing = CHROMIUM ? false : 'chromium is not installed (apt-get install chromium)';

let server: DevServer;
let client: FaultlineClient;
let stopWorker: () => Promise<void>;
let web: WebServer;
let browser: Browser | undefined;

before(async () => {
  server = await startDevServer({});
  const config = loadConfig({ ...process.env, TEMPORAL_ADDRESS: server.address, FAULTLINE_TASK_QUEUE: 'faultline-web', FAULTLINE_LOG_LEVEL: 'error' }, ROOT);
  const started = await workerAndClient(config);
  client = started.client;
  stopWorker = started.stop;
  web = await startWebServer({ client, namespace: config.namespace, port: 0, temporalUi: 'http://127.0.0.1:1' });
});

after(async () => {
  await browser?.close();
  await web?.close();
  await stopWorker?.();
  await server?.stop();
});

async function openPage(url: string): Promise<Page> {
  browser ??= await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1300, height: 1000 } });
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(message.text());
  });
  await page.goto(url);
  (page as Page & { errors?: string[] }).errors = errors;
  return page;
}

async function screenshot(page: Page, name: string): Promise<void> {
  await mkdir(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`# screenshot: ${path.relative(ROOT, file)}`);
}

/** Clicks an action's button, then the confirmation page's Confirm; returns the outcome's text. */
async function act(page: Page, button: string): Promise<string> {
  await page.getByRole('button', { name: button }).first().click();
  await page.getByRole('button', { name: 'Confirm' }).click();
  return (await page.getByRole('status').textContent()) ?? '';
}

describe('faultline web (headless Debian chromium)', () => {
  it('lists jobs; a PartiallySucceeded job shows counts, failures by type, items and an item report; retrying one type runs round 2 of the same job', { skip: chromiumMissing }, async () => {
    const jobId = `web-partial-${Date.now()}`;
    const items = [
      ...Array.from({ length: 6 }, (_, n) => ({ id: `good-${n}` })),
      { id: 'broken-1', params: { outcome: 'unprocessable' as const, causeDepth: 2 } },
      { id: 'broken-2', params: { outcome: 'unprocessable' as const } },
      { id: 'gone-1', params: { outcome: 'missing' as const } },
    ];
    await client.start(syntheticSpec(items, { retryWindow: '10m', tenant: 'web-tenant' }), { jobId });
    const first = await client.result(jobId);
    assert.equal(first.status, 'PartiallySucceeded');
    await eventually(async () => (await client.list({ hasErrors: true })).some((job) => job.jobId === jobId), 15_000, 'visibility');

    const byTenant = await openPage(`${web.url}/?tenant=nobody`);
    await byTenant.getByText('No jobs match.').waitFor();
    await byTenant.close();
    const list = await openPage(`${web.url}/?hasErrors=true&tenant=web-tenant`);
    await list.getByRole('link', { name: jobId }).waitFor();
    assert.match((await list.getByRole('row', { name: new RegExp(jobId) }).textContent()) ?? '', /web-tenant/);
    await screenshot(list, 'web-jobs.png');
    await list.getByRole('link', { name: jobId }).click();
    await list.waitForURL(new RegExp(`/jobs/${jobId}$`));
    const page = list;

    const counts = page.getByRole('definition');
    assert.equal(await page.locator('[data-field="count-Available"]').textContent(), '6');
    assert.equal(await page.locator('[data-field="count-Failed"]').textContent(), '2');
    assert.equal(await page.locator('[data-field="count-Missing"]').textContent(), '1');
    assert.ok((await counts.count()) >= 8, 'counts by status are shown');
    const groups = page.getByRole('table', { name: 'Failures by error type' });
    const row = groups.getByRole('row', { name: /ItemUnprocessable/ });
    assert.match((await row.textContent()) ?? '', /ItemUnprocessable\s*2\s*unprocessable/);
    await screenshot(page, 'web-job-partial.png');

    // The item browser, filtered by error type, then one item's report with its cause chain.
    await page.getByRole('link', { name: 'ItemUnprocessable' }).click();
    const itemRows = page.getByRole('table', { name: 'Items' }).getByRole('row');
    await eventually(async () => (await itemRows.count()) === 3, 10_000, 'two failed items listed');
    await page.getByRole('link', { name: 'broken-1' }).click();
    await page.getByRole('heading', { name: 'Item broken-1' }).waitFor();
    const report = (await page.locator('main').textContent()) ?? '';
    assert.match(report, /ItemUnprocessable/);
    assert.match(report, /caused by/, 'the cause chain is shown');
    await screenshot(page, 'web-item-report.png');

    // Retry one error type from the page: the same job runs round 2 for those two items only.
    await page.goto(`${web.url}/jobs/${jobId}`);
    const outcome = await act(page, 'Retry ItemUnprocessable');
    assert.match(outcome, /2 item\(s\) queued for round 2/);
    const second = await client.result(jobId, { round: 2 });
    assert.equal(second.round, 2);
    assert.equal(second.jobId, jobId);
    await page.goto(`${web.url}/jobs/${jobId}`);
    assert.match((await page.locator('main').textContent()) ?? '', /round\s*2/);
    assert.deepEqual((page as Page & { errors?: string[] }).errors, [], 'no script errors');
  });

  it('pauses and resumes a running job from its page, and shows it live', { skip: chromiumMissing }, async () => {
    const jobId = `web-pause-${Date.now()}`;
    await client.start(
      syntheticSpec(
        Array.from({ length: 30 }, (_, n) => ({ id: `slow-${n}`, params: { cpuMs: 150 } })),
        { concurrency: 1, batchSize: 1 },
      ),
      { jobId },
    );
    const page = await openPage(`${web.url}/jobs/${jobId}`);
    assert.match(await act(page, 'Pause'), /is paused/);
    await eventually(async () => (await client.progress(jobId)).paused === true, 10_000, 'paused');
    await page.goto(`${web.url}/jobs/${jobId}`);
    await page.getByRole('button', { name: 'Resume' }).waitFor();
    await eventually(async () => ((await page.locator('[data-field="phase"]').textContent()) ?? '') === 'paused', 10_000, 'the page to say paused');
    // Limits and a flag from the page's forms, confirmed like every action.
    await page.getByLabel('Concurrency').fill('2');
    assert.match(await act(page, 'Change limits'), /Concurrency 2/);
    assert.equal((await client.progress(jobId)).limits?.concurrency, 2);
    await page.goto(`${web.url}/jobs/${jobId}`);
    await page.getByLabel('Reason').fill('slow items under review');
    assert.match(await act(page, 'Flag'), /1 flag/);
    await page.goto(`${web.url}/jobs/${jobId}`);
    assert.match(await act(page, 'Resume'), /is running/);
    const result = await client.result(jobId);
    assert.equal(result.status, 'Succeeded');
    assert.equal(result.counts.Available, 30);
    assert.deepEqual(
      result.limitsChanged?.map((change) => change.concurrency),
      [2],
    );
    assert.deepEqual(
      result.flags?.map((flag) => flag.reason),
      ['slow items under review'],
    );
  });

  it("renders a 100,000-item job's page in under 2 s, with paging through its items", { skip: chromiumMissing }, async () => {
    const jobId = `web-100k-${Date.now()}`;
    const items = Array.from({ length: 100_000 }, (_, n) => (n % 1000 === 7 ? { id: `i${n}`, params: { outcome: 'unprocessable' as const } } : { id: `i${n}` }));
    await client.start(syntheticSpec(items, { toleratedFailurePercent: 100 }), { jobId });
    const result = await client.result(jobId);
    assert.equal(result.counts.items, 100_000);
    assert.equal(result.counts.Failed, 100);
    const page = await openPage(`${web.url}/`);
    const started = Date.now();
    await page.goto(`${web.url}/jobs/${jobId}?status=Failed&page=2`, { waitUntil: 'load' });
    const took = Date.now() - started;
    console.log(`# 100k-item job page (failed items, page 2): ${took} ms`);
    assert.ok(took < 2_000, `the page rendered in ${took} ms`);
    assert.equal(await page.locator('[data-field="count-Failed"]').textContent(), '100');
    const rows = page.getByRole('table', { name: 'Items' }).getByRole('row');
    assert.equal(await rows.count(), 51, 'the second page holds failed items 51-100');
    assert.match((await rows.nth(1).textContent()) ?? '', /i50007/);
    assert.equal(await page.getByRole('link', { name: 'Next page' }).count(), 0, 'no third page');
    await screenshot(page, 'web-job-100k.png');
  });
});

describe('faultline web: safe by default', () => {
  it('refuses to bind beyond loopback without a token', async () => {
    await assert.rejects(startWebServer({ client, namespace: 'default', port: 0, host: '0.0.0.0' }), WebRefused);
  });

  it('with a token: pages need a sign-in or a bearer token; forms need their CSRF token and the same origin', async () => {
    const guarded = await startWebServer({ client, namespace: 'default', port: 0, token: 'sesame-0123456789' });
    try {
      const anonymous = await fetch(`${guarded.url}/`, { redirect: 'manual' });
      assert.equal(anonymous.status, 303);
      assert.equal(anonymous.headers.get('location'), '/login');
      assert.equal((await fetch(`${guarded.url}/api/jobs`)).status, 401);
      const bearer = await fetch(`${guarded.url}/api/jobs`, { headers: { authorization: 'Bearer sesame-0123456789' } });
      assert.equal(bearer.status, 200);
      assert.ok(Array.isArray(await bearer.json()));
      assert.match(bearer.headers.get('content-security-policy') ?? '', /script-src 'self'/);

      // Sign in through the form: the CSRF cookie from the login page goes with it.
      const login = await fetch(`${guarded.url}/login`);
      const csrf = /name="csrf" value="([^"]+)"/.exec(await login.text())?.[1] ?? '';
      const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0] ?? '';
      const wrong = await fetch(`${guarded.url}/login`, {
        method: 'POST',
        headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
        body: `csrf=${csrf}&token=nope`,
        redirect: 'manual',
      });
      assert.equal(wrong.status, 401);
      const signed = await fetch(`${guarded.url}/login`, {
        method: 'POST',
        headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
        body: `csrf=${csrf}&token=sesame-0123456789`,
        redirect: 'manual',
      });
      assert.equal(signed.status, 303);
      const session = (signed.headers.get('set-cookie') ?? '').split(';')[0] ?? '';
      const cookies = `${cookie}; ${session}`;
      assert.equal((await fetch(`${guarded.url}/`, { headers: { cookie: cookies } })).status, 200);

      const post = (body: string, headers: Record<string, string> = {}) =>
        fetch(`${guarded.url}/jobs/nope/actions/cancel`, { method: 'POST', headers: { cookie: cookies, 'content-type': 'application/x-www-form-urlencoded', ...headers }, body });
      assert.equal((await post('csrf=forged')).status, 403, 'a forged CSRF token is refused');
      assert.equal((await post(`csrf=${csrf}`, { origin: 'http://evil.example' })).status, 403, 'another origin is refused');
      const asked = await post(`csrf=${csrf}`);
      assert.equal(asked.status, 200);
      assert.match(await asked.text(), /Confirm/, 'an action asks first');
      const unknown = await post(`csrf=${csrf}&confirmed=yes`);
      assert.equal(unknown.status, 404, 'a confirmed cancel of an unknown job says not found');
    } finally {
      await guarded.close();
    }
  });
});
