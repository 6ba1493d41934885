/**
 * The short `npm run chaos -- --stack` (run by `npm run test:stack` in CI): on PostgreSQL + the
 * Temporal server + MinIO, with the workers reaching MinIO through a fault-injecting proxy, an
 * images job and a sharded synthetic job run through worker SIGKILLs, a Temporal server kill +
 * restart, a fast PostgreSQL restart and one stopped for 20 s, a MinIO outage and proxy resets and
 * stalls: every output exactly once, exact counts, every file whole.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runChaos } from '../helpers/chaos';

describe('chaos on the production-like stack (short)', () => {
  it('worker kills, a Temporal restart, PostgreSQL restarts, a MinIO outage and proxy faults: nothing lost or doubled', async () => {
    const report = await runChaos({
      seed: 11,
      rounds: 1,
      imagesPerRound: 100,
      syntheticPerRound: 2_000,
      workerKills: 3,
      temporalRestarts: 1,
      processes: 2,
      target: { kind: 'stack', postgresRestarts: 2, postgresPauseMs: 20_000, minioOutages: 1, minioOutageMs: [10_000, 15_000], proxyFaults: 2 },
      log: (line) => console.error(`[chaos] ${line}`),
    });
    assert.deepEqual(report.violations, []);
    const { faults } = report;
    assert.deepEqual([faults.workerKills, faults.temporalRestarts, faults.postgresRestarts, faults.minioOutages, faults.proxyFaults], [3, 1, 2, 1, 2], 'every planned fault injected');
    assert.ok(faults.workerRestartsSeen >= faults.workerKills, 'the supervisor restarted every killed worker');
    assert.equal(report.items, 2_100 * report.rounds.length);
    assert.equal(report.strayTempFiles, 0);
  });
});
