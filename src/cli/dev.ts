/** `faultline dev`: dev server + supervised worker processes (one per core by default), all stopped by Ctrl-C. */
import path from 'node:path';
import { loadConfig } from '../config';
import { createLogger } from '../logger';
import { loadSecretKey } from '../secrets';
import { localStateDir } from '../storage';
import { isReachable, startDevServer } from '../devserver/temporal-cli';
import { DEFAULT_NAMESPACE, ENV } from '../shared/constants';
import { WorkerSupervisor } from '../supervisor';
import { untilStopSignal } from '../stop-signal';
import { codecFromConfig } from '../codec';
import { startCodecServer, uiOrigins } from '../codec-server';
import { FaultlineClient } from '../client';
import { type WebServer, startWebFor } from '../web/server';
import type { Config } from '../config';

/** Where the dev server keeps its state: a SQLite file (default: `dev.db` in job storage, git-ignored) or memory. */
export type DevDatabase = { kind: 'file'; path?: string } | { kind: 'memory' };

/** A one-line refusal, exit 2 (the CLI's usage class). */
export class DevPortBusy extends Error {}

export async function runDev(options: { port: number; uiPort: number; webPort: number; db: DevDatabase }): Promise<number> {
  const config = loadConfig();
  const logger = createLogger({ level: config.logLevel, format: config.logFormat, name: 'faultline-dev' });
  // Another dev server (or anything else) on our ports: refuse instead of attaching to it.
  for (const [port, what] of [[options.port, '--port'], [options.uiPort, '--ui-port'], ...(options.webPort > 0 ? ([[options.webPort, '--web-port']] as const) : [])] as const) {
    if (await isReachable(`127.0.0.1:${port}`, 500)) throw new DevPortBusy(`port ${port} is already in use (another faultline dev or Temporal server?); stop it or pick another ${what}`);
  }
  loadSecretKey(config.secretKey, localStateDir(config.storage), true); // one shared key for webhook secrets, git-ignored
  const db = options.db.kind === 'memory' ? undefined : (options.db.path ?? path.join(localStateDir(config.storage), 'dev.db'));
  // With payload encryption on, the Web UI decodes through a codec server started here.
  const codec = codecFromConfig(config);
  const codecServer = codec
    ? await startCodecServer({ codec, port: 0, origins: uiOrigins(options.uiPort), ...(config.codecToken ? { token: config.codecToken } : {}), log: (line) => logger.warn(line) })
    : undefined;
  const server = await startDevServer({
    port: options.port,
    uiPort: options.uiPort,
    ...(db ? { db } : {}),
    ...(codecServer ? { uiCodecEndpoint: codecServer.url } : {}),
    log: (line) => logger.info(line),
  });
  if (codecServer) logger.info({ codecServer: codecServer.url }, 'payloads are encrypted (FAULTLINE_PAYLOAD_KEY); the Web UI decodes them through the codec server');
  logger.info({ address: server.address, ui: server.uiUrl, db: db ?? 'in-memory (--ephemeral)' }, 'Temporal dev server started');
  console.error(`Temporal Web UI: ${server.uiUrl ?? 'off'}   gRPC: ${server.address}   namespace: ${DEFAULT_NAMESPACE}`);

  const workers = new WorkerSupervisor({
    processes: config.workerProcesses,
    logger,
    shutdownGraceMs: config.shutdownGraceMs,
    maxHeapMb: config.workerMaxHeapMb,
    gc: config.workerGc,
    env: { ...process.env, [ENV.address]: server.address },
  });
  const signal = untilStopSignal((repeated) => logger.info({ signal: repeated }, 'already stopping'));
  await workers.start();
  // Faultline's own pages (items, failures by type, actions) beside Temporal's Web UI; dev runs on without them if they cannot start.
  const devConfig = { ...config, address: server.address };
  const started =
    options.webPort > 0 ? await startDevWeb(devConfig, options.webPort, server.uiUrl).catch((error: unknown) => (logger.warn({ err: error }, 'faultline web did not start'), undefined)) : undefined;
  const web = started?.web;
  const webClient = started?.client;
  if (web) console.error(`Faultline web: ${web.url}`);
  const ended = await Promise.race([signal.stopped.then(() => 0), workers.configurationExit]);
  logger.info('stopping workers and dev server');
  await web?.close();
  await webClient?.close();
  await workers.stop();
  await server.stop();
  await codecServer?.close();
  signal.release();
  return ended;
}

/** The web app for dev, its client connecting with retries (a dev server reopening its database can be slow to answer). */
async function startDevWeb(config: Config, port: number, temporalUi: string | undefined): Promise<{ client: FaultlineClient; web: WebServer }> {
  const deadline = Date.now() + 30_000;
  let client: FaultlineClient | undefined;
  while (!client) {
    try {
      client = await FaultlineClient.connect({ config });
    } catch (error) {
      if (Date.now() > deadline) throw error;
    }
  }
  try {
    return { client, web: await startWebFor(client, config, { port, ...(temporalUi ? { temporalUi } : {}) }) };
  } catch (error) {
    await client.close();
    throw error;
  }
}
