// Installs the pinned Temporal CLI (and the time-skipping test server) when missing. Idempotent.
import { TemporalCliUnavailable, ensureTemporalCli, ensureTestServer } from '../src/devserver/temporal-cli';

try {
  const cli = ensureTemporalCli((line) => console.error(`[temporal] ${line}`));
  const testServer = process.argv.includes('--test-server') ? ensureTestServer((line) => console.error(`[temporal] ${line}`)) : undefined;
  console.error(`[temporal] CLI: ${cli}${testServer ? `; test server: ${testServer}` : ''}`);
} catch (error) {
  console.error(`error: ${error instanceof TemporalCliUnavailable ? error.message : String(error)}`);
  process.exit(1);
}
