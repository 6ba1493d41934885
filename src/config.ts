/** Runtime configuration from the environment, parsed with zod when a command starts (never at import). */
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { DEFAULT_ADDRESS, DEFAULT_NAMESPACE, ENV, TASK_QUEUE } from './shared/constants';
import { DurationSchema } from './shared/duration';

const optionalString = z.string().trim().min(1).optional().catch(undefined);

export const ConfigSchema = z.object({
  address: z.string().min(1).default(DEFAULT_ADDRESS),
  namespace: z.string().min(1).default(DEFAULT_NAMESPACE),
  apiKey: optionalString,
  tlsCert: optionalString,
  tlsKey: optionalString,
  tlsCa: optionalString,
  tlsServerName: optionalString,
  taskQueue: z.string().min(1).default(TASK_QUEUE),
  storage: z.string().min(1).default('.faultline'),
  allowedRoots: z.array(z.string().min(1)),
  allowedHosts: z.array(z.string().min(1)),
  secretKey: optionalString,
  /** AES-256 key that encrypts every payload in Temporal (src/codec.ts); old keys only decrypt. */
  payloadKey: optionalString,
  payloadKeysOld: optionalString,
  /** Bearer token `faultline codec-server` requires, when set. */
  codecToken: optionalString,
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  logFormat: z.enum(['json', 'pretty', 'auto']).default('auto'),
  maxConcurrentActivities: z.coerce.number().int().min(1).max(10_000).default(100),
  shutdownGraceMs: z.number().int().min(0).default(10_000),
  /** Worker processes per `faultline worker` / `faultline dev` (default: one per core). */
  workerProcesses: z.coerce.number().int().min(1).max(256).default(os.availableParallelism()),
  /** V8 heap limit per supervised worker process in MB; 0 leaves V8's default. */
  workerMaxHeapMb: z.coerce.number().int().min(0).max(65_536).default(256),
});
export type Config = z.infer<typeof ConfigSchema>;

export class ConfigError extends Error {
  constructor(readonly issues: { path: string; message: string }[]) {
    super(`invalid configuration: ${issues.map((issue) => `${issue.path}: ${issue.message}`).join('; ')}`);
    this.name = 'ConfigError';
  }
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Config {
  const list = (value: string | undefined, separator: string | RegExp) =>
    (value ?? '')
      .split(separator)
      .map((entry) => entry.trim())
      .filter(Boolean);
  const grace = env[ENV.shutdownGrace];
  const parsedGrace = grace ? DurationSchema.safeParse(grace) : undefined;
  const raw = {
    address: env[ENV.address] || undefined,
    namespace: env[ENV.namespace] || undefined,
    apiKey: env[ENV.apiKey],
    tlsCert: env[ENV.tlsCert],
    tlsKey: env[ENV.tlsKey],
    tlsCa: env[ENV.tlsCa],
    tlsServerName: env[ENV.tlsServerName],
    taskQueue: env[ENV.taskQueue] || undefined,
    storage: path.resolve(cwd, env[ENV.storage] || '.faultline'),
    allowedRoots: (list(env[ENV.allowedRoots], path.delimiter).length > 0 ? list(env[ENV.allowedRoots], path.delimiter) : [cwd]).map((root) => path.resolve(cwd, root)),
    allowedHosts: list(env[ENV.allowedHosts], ',').map((host) => host.toLowerCase()),
    secretKey: env[ENV.secretKey],
    payloadKey: env[ENV.payloadKey],
    payloadKeysOld: env[ENV.payloadKeysOld],
    codecToken: env[ENV.codecToken],
    logLevel: env[ENV.logLevel] || undefined,
    logFormat: env[ENV.logFormat] || undefined,
    maxConcurrentActivities: env[ENV.maxConcurrentActivities] || undefined,
    shutdownGraceMs: parsedGrace?.success ? parsedGrace.data : undefined,
    workerProcesses: env[ENV.workerProcesses] || undefined,
    workerMaxHeapMb: env[ENV.workerMaxHeapMb] || undefined,
  };
  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((issue) => ({ path: String(issue.path[0] ?? ''), message: issue.message })));
  }
  if (grace && !parsedGrace?.success) throw new ConfigError([{ path: ENV.shutdownGrace, message: `"${grace}" is not a duration` }]);
  return parsed.data;
}
