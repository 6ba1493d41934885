/**
 * `npm run chaos [-- --stack] [--seed N --kills N --restarts N --postgres-restarts N --minio-outages N
 * --proxy-faults N --rounds N --images N --synthetic N --processes N --json]`: the long fault suite.
 * - On the dev server (default): ≥ 100 worker SIGKILLs and ≥ 5 Temporal server kills during rounds
 *   of thousands of items.
 * - With `--stack` (PostgreSQL + Temporal server + MinIO, the workers reaching MinIO through a
 *   fault-injecting proxy): ≥ 50 worker SIGKILLs, 3 Temporal server kills, 3 PostgreSQL restarts
 *   (fast, and stopped for 20 s), 3 MinIO outages of 10–30 s and 6 proxy faults (resets, stalls)
 *   over ≥ 20,000 items.
 * Exits 1 on any violation. The same seed injects the same faults. `--json` ends with the report.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { type ChaosTarget, runChaos } from '../test/helpers/chaos';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      stack: { type: 'boolean', default: false },
      seed: { type: 'string', default: '1' },
      kills: { type: 'string' },
      restarts: { type: 'string' },
      'postgres-restarts': { type: 'string', default: '3' },
      'minio-outages': { type: 'string', default: '3' },
      'proxy-faults': { type: 'string', default: '6' },
      rounds: { type: 'string', default: '5' },
      images: { type: 'string', default: '400' },
      synthetic: { type: 'string' },
      processes: { type: 'string', default: String(os.availableParallelism()) },
      json: { type: 'boolean', default: false },
    },
  });
  const count = (name: keyof typeof values, fallback?: string) => {
    const given = values[name] ?? fallback;
    const value = Number(given);
    if (!Number.isInteger(value) || value < 0) throw new Error(`--${name} wants a whole number, got "${String(given)}"`);
    return value;
  };
  const target: ChaosTarget = values.stack
    ? {
        kind: 'stack',
        postgresRestarts: count('postgres-restarts'),
        postgresPauseMs: 20_000,
        minioOutages: count('minio-outages'),
        minioOutageMs: [10_000, 30_000],
        proxyFaults: count('proxy-faults'),
      }
    : { kind: 'dev' };
  const report = await runChaos({
    seed: count('seed'),
    workerKills: count('kills', values.stack ? '50' : '100'),
    temporalRestarts: count('restarts', values.stack ? '3' : '5'),
    rounds: Math.max(1, count('rounds')),
    imagesPerRound: count('images'),
    syntheticPerRound: count('synthetic', values.stack ? '3600' : '3000'),
    processes: Math.max(1, count('processes')),
    target,
    log: (line) => console.error(line),
  });
  if (values.json) console.log(JSON.stringify(report, null, 2));
  else {
    const { faults } = report;
    const stack =
      report.target === 'stack'
        ? `, ${faults.postgresRestarts} PostgreSQL restarts, ${faults.minioOutages} MinIO outages, ${faults.proxyFaults} proxy faults (${faults.proxy.connectionsCut} connections cut, ${Math.round(faults.proxy.stalledMs / 1000)} s stalled)`
        : '';
    console.log(
      `chaos seed ${report.seed} on ${report.target === 'stack' ? 'the stack' : 'the dev server'}: ${report.rounds.length} rounds, ${report.items} items in ${Math.round(report.elapsedMs / 1000)} s; ` +
        `${faults.workerKills} worker SIGKILLs (${faults.workerRestartsSeen} restarts by the supervisor), ${faults.temporalRestarts} Temporal server kills+restarts${stack}; ` +
        `HTTP ${faults.http.unavailable} × 503, ${faults.http.reset} resets, ${faults.http.drip} slow drips, ${faults.http.ok} ok; ` +
        `${report.strayTempFiles} stray temp files; ${report.violations.length === 0 ? 'every output exactly once, counts exact, every file present' : `${report.violations.length} VIOLATIONS`}`,
    );
    for (const line of report.violations.slice(0, 20)) console.log(`  ${line}`);
  }
  return report.violations.length === 0 ? 0 : 1;
}

main().then(
  (code) => (process.exitCode = code),
  (error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  },
);
