/** `faultline dev`: dev server + a supervised worker process, all stopped by Ctrl-C. */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { loadConfig } from '../config';
import { createLogger } from '../logger';
import { loadSecretKey } from '../secrets';
import { startDevServer } from '../devserver/temporal-cli';
import { DEFAULT_NAMESPACE } from '../shared/constants';

export async function runDev(options: { port: number; uiPort: number; db?: string }): Promise<number> {
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, format: config.logFormat, name: 'faultline-dev' });
  loadSecretKey(config.secretKey, config.storage, true); // one shared key for webhook secrets, git-ignored
  const server = await startDevServer({ port: options.port, uiPort: options.uiPort, ...(options.db ? { db: options.db } : {}), log: (line) => logger.info(line) });
  logger.info({ address: server.address, ui: server.uiUrl, db: options.db ?? 'in-memory' }, 'Temporal dev server started');
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
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
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
