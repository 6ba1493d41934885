/**
 * The short chaos run (`npm run chaos` is the long one): worker SIGKILLs and a Temporal server
 * kill + restart on a SQLite file, a flaky HTTP source, while an images job and a sharded
 * synthetic job run under `faultline worker --processes 2`.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { httpFault, runChaos, seededRandom } from '../helpers/chaos';

describe('chaos (short)', () => {
  it('the fault schedule is a function of the seed', () => {
    const a = seededRandom(42);
    const b = seededRandom(42);
    assert.deepEqual([a(), a(), a()], [b(), b(), b()]);
    assert.notDeepEqual([seededRandom(1)()], [seededRandom(2)()]);
    const faults = Array.from({ length: 400 }, (_, i) => httpFault(42, `/img-${i}.jpg`, 1));
    assert.deepEqual(
      faults,
      Array.from({ length: 400 }, (_, i) => httpFault(42, `/img-${i}.jpg`, 1)),
    );
    for (const kind of ['ok', 'unavailable', 'reset', 'drip'] as const) assert.ok(faults.includes(kind), `seed 42 injects ${kind}`);
    assert.equal(httpFault(42, '/x', 3), 'ok', 'third and later requests succeed, so every item stays within its retry budget');
  });

  it('worker kills, a server kill and a flaky source: every output exactly once, exact counts, every file present', async () => {
    const report = await runChaos({ seed: 7, rounds: 1, imagesPerRound: 120, syntheticPerRound: 2_000, workerKills: 5, temporalRestarts: 1, processes: 2, target: { kind: 'dev' } });
    assert.deepEqual(report.violations, []);
    assert.ok(report.faults.workerKills >= 5, `worker kills: ${report.faults.workerKills}`);
    assert.ok(report.faults.temporalRestarts >= 1, `Temporal restarts: ${report.faults.temporalRestarts}`);
    assert.ok(report.faults.workerRestartsSeen >= report.faults.workerKills, 'the supervisor restarted every killed worker');
    assert.ok(report.faults.http.unavailable > 0 && report.faults.http.reset > 0 && report.faults.http.drip > 0, JSON.stringify(report.faults.http));
    assert.equal(report.strayTempFiles, 0, 'writes cut short leave no temp files once the item is written again');
    assert.equal(report.items, 2_120 * report.rounds.length);
  });
});
