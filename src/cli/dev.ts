/** `faultline dev`: dev server + a supervised worker process, all stopped by Ctrl-C. */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { loadConfig } from '../config';
import { createLogger } from '../logger';
import { loadSecretKey } from '../secrets';
import { isReachable, startDevServer } from '../devserver/temporal-cli';
import { DEFAULT_NAMESPACE } from '../shared/constants';

/** Where the dev server keeps its state: a SQLite file (default: `dev.db` in job storage, git-ignored) or memory. */
export type DevDatabase = { kind: 'file'; path?: string } | { kind: 'memory' };

/** A one-line refusal, exit 2 (the CLI's usage class). */
export class DevPortBusy extends Error {}

export async function runDev(options: { port: number; uiPort: number; db: DevDatabase }): Promise<number> {
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, format: config.logFormat, name: 'faultline-dev' });
  // Another dev server (or anything else) on our ports: refuse instead of attaching to it.
  for (const [port, what] of [
    [options.port, '--port'],
    [options.uiPort, '--ui-port'],
  ] as const) {
    if (await isReachable(`127.0.0.1:${port}`, 500)) throw new DevPortBusy(`port ${port} is already in use (another faultline dev or Temporal server?); stop it or pick another ${what}`);
  }
  loadSecretKey(config.secretKey, config.storage, true); // one shared key for webhook secrets, git-ignored
  const db = options.db.kind === 'memory' ? undefined : (options.db.path ?? path.join(config.storage, 'dev.db'));
  const server = await startDevServer({ port: options.port, uiPort: options.uiPort, ...(db ? { db } : {}), log: (line) => logger.info(line) });
  logger.info({ address: server.address, ui: server.uiUrl, db: db ?? 'in-memory (--ephemeral)' }, 'Temporal dev server started');
  console.error(`Temporal Web UI: ${server.uiUrl ?? 'off'}   gRPC: ${server.address}   namespace: ${DEFAULT_NAMESPACE}`);

  let worker: ChildProcess | undefined;
  let stopping = false;
  let restarts = 0;
  const startWorker = () => {
    const cli = path.resolve(__dirname, '..', '..', 'bin', 'faultline.js');
    worker = spawn(process.execPath, [cli, 'worker'], { stdio: 'inherit', env: { ...process.env, TEMPORAL_ADDRESS: server.address } });
    worker.once('exit', (code, signal) => {
      if (stopping) return;
      restarts += 1;
      const delay = Math.min(5_000, 250 * restarts);
      logger.warn({ code, signal, restarts }, `worker exited; restarting in ${delay} ms`);
      setTimeout(startWorker, delay);
    });
  };
  startWorker();

  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  stopping = true;
  logger.info('stopping worker and dev server');
  if (worker && worker.exitCode === null) {
    const gone = new Promise((resolve) => worker?.once('exit', resolve));
    worker.kill('SIGTERM');
    const timer = setTimeout(() => worker?.kill('SIGKILL'), 15_000);
    await gone;
    clearTimeout(timer);
  }
  await server.stop();
  return 0;
}
