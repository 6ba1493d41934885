import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { freePort } from '../../src/devserver/temporal-cli';
import { ROOT, type TestEnv, createTestEnv, eventually, syntheticSpec } from '../helpers/env';

let t: TestEnv;
before(async () => {
  t = await createTestEnv({ taskQueue: 'faultline-metrics' });
});
after(async () => {
  await t?.teardown();
});

interface Family {
  name: string;
  type: string;
  metrics: { labels?: Record<string, string>; value?: string; buckets?: Record<string, string>; count?: string }[];
}

async function scrape(url: string): Promise<Family[]> {
  const answer = await fetch(url);
  assert.equal(answer.status, 200);
  return parsePrometheusTextFormat(await answer.text()) as Family[];
}

function value(families: Family[], name: string, labels: Record<string, string>): number {
  const family = families.find((candidate) => candidate.name === name);
  const sample = family?.metrics.find((metric) => Object.entries(labels).every(([key, wanted]) => metric.labels?.[key] === wanted));
  return Number(sample?.value ?? sample?.count ?? 0);
}

function observations(families: Family[], name: string): number {
  const family = families.find((candidate) => candidate.name === name);
  assert.equal(family?.type, 'HISTOGRAM', `${name} is a histogram`);
  return Number(family.metrics[0]?.buckets?.['+Inf'] ?? 0);
}

describe('Prometheus /metrics on a worker process (FAULTLINE_METRICS_ADDRESS)', () => {
  it("counts items by status, errors by type and class, step durations and settled jobs, next to the Temporal SDK's metrics", async () => {
    const port = await freePort();
    const worker = t.spawnWorker({ FAULTLINE_METRICS_ADDRESS: `127.0.0.1:${port}` });
    try {
      const url = `http://127.0.0.1:${port}/metrics`;
      await eventually(
        () =>
          fetch(url).then(
            (answer) => answer.ok,
            () => false,
          ),
        60_000,
        'the worker to serve /metrics',
      );
      const items = [
        ...Array.from({ length: 5 }, (_, n) => ({ id: `ok-${n}` })),
        { id: 'bad-1', params: { outcome: 'unprocessable' as const } },
        { id: 'bad-2', params: { outcome: 'unprocessable' as const } },
        { id: 'flaky', params: { transientFailures: 1, retryAfterMs: 0 } },
      ];
      const { jobId } = await t.client.start(syntheticSpec(items));
      const result = await t.client.result(jobId);
      assert.equal(result.status, 'PartiallySucceeded');

      // The job's settled round is counted by the workflow's sink, after its result is out.
      let families: Family[] = [];
      await eventually(async () => value((families = await scrape(url)), 'faultline_jobs_total', { pipeline: 'synthetic', status: 'PartiallySucceeded' }) === 1, 15_000, 'the settled job counted');
      assert.equal(value(families, 'faultline_items_total', { pipeline: 'synthetic', status: 'Available' }), 6);
      assert.equal(value(families, 'faultline_items_total', { pipeline: 'synthetic', status: 'Failed' }), 2);
      assert.equal(value(families, 'faultline_item_errors_total', { pipeline: 'synthetic', type: 'ItemUnprocessable', class: 'unprocessable' }), 2);
      assert.equal(value(families, 'faultline_retries_total', { pipeline: 'synthetic' }), 1);
      // The parser folds a histogram with one label set into its buckets; +Inf counts every observation.
      assert.equal(observations(families, 'faultline_item_duration_seconds'), 9, 'eight items, one tried twice, all in step "work"');
      assert.equal(observations(families, 'faultline_job_duration_seconds'), 1);
      assert.equal(value(families, 'faultline_batches_in_flight', {}), 0);
      const temporal = families.filter((family) => family.name.startsWith('temporal_'));
      assert.ok(temporal.length > 5, `the SDK's own metrics are served too (${temporal.length} families)`);
      // Every metric the shipped Grafana dashboard queries is one a worker serves.
      const dashboard = readFileSync(path.join(ROOT, 'docker', 'grafana', 'dashboards', 'faultline.json'), 'utf8');
      const queried = new Set([...dashboard.matchAll(/\b((?:faultline|temporal)_[a-z_]+?)(?:_bucket|_sum|_count)?\b/g)].map((match) => match[1] ?? ''));
      assert.ok(queried.size >= 8, `the dashboard queries ${[...queried].join(', ')}`);
      for (const name of queried)
        assert.ok(
          families.some((family) => family.name === name),
          `the dashboard's ${name} is served (not among ${families.map((family) => family.name).join(' ')})`,
        );
    } finally {
      await worker.stop();
    }
  });
});
