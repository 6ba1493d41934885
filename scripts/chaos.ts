/**
 * `npm run chaos [-- --seed N --kills N --restarts N --rounds N --images N --synthetic N --processes N --json]`:
 * the long fault suite (defaults: ≥ 100 worker SIGKILLs and ≥ 5 Temporal server kills during
 * rounds of thousands of items). Exits 1 on any violation. The same seed injects the same faults.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { runChaos } from '../test/helpers/chaos';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seed: { type: 'string', default: '1' },
      kills: { type: 'string', default: '100' },
      restarts: { type: 'string', default: '5' },
      rounds: { type: 'string', default: '5' },
      images: { type: 'string', default: '400' },
      synthetic: { type: 'string', default: '3000' },
      processes: { type: 'string', default: String(os.availableParallelism()) },
      json: { type: 'boolean', default: false },
    },
  });
  const count = (name: keyof typeof values) => {
    const value = Number(values[name]);
    if (!Number.isInteger(value) || value < 0) throw new Error(`--${name} wants a whole number, got "${String(values[name])}"`);
    return value;
  };
  const report = await runChaos({
    seed: count('seed'),
    workerKills: count('kills'),
    serverRestarts: count('restarts'),
    rounds: Math.max(1, count('rounds')),
    imagesPerRound: count('images'),
    syntheticPerRound: count('synthetic'),
    processes: Math.max(1, count('processes')),
    log: (line) => console.error(line),
  });
  if (values.json) console.log(JSON.stringify(report, null, 2));
  else {
    const { faults } = report;
    console.log(
      `chaos seed ${report.seed}: ${report.rounds.length} rounds, ${report.items} items in ${Math.round(report.elapsedMs / 1000)} s; ` +
        `${faults.workerKills} worker SIGKILLs (${faults.workerRestartsSeen} restarts by the supervisor), ${faults.serverRestarts} Temporal server kills+restarts; ` +
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
