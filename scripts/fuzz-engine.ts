/**
 * `npm run fuzz:engine -- [--runs N] [--seed S]`: the message-interleaving property test
 * (test/integration/interleavings.test.ts) for as many cases as asked; a failure prints its seed.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '1000' }, seed: { type: 'string' } } });
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) {
  console.error(`error: --runs wants a whole number, got "${values.runs}"`);
  process.exit(2);
}
const test = path.resolve(__dirname, '..', 'test', 'integration', 'interleavings.test.ts');
const result = spawnSync(process.execPath, ['--import', 'tsx', '--test', `--test-timeout=${Math.max(300_000, runs * 5_000)}`, test], {
  stdio: 'inherit',
  env: { ...process.env, FAULTLINE_FUZZ_RUNS: String(runs), FAULTLINE_FUZZ_SEED: values.seed ?? String(Date.now() % 2 ** 31) },
});
process.exit(result.status ?? 1);
