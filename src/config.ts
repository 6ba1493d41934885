/** Runtime configuration from the environment, parsed with zod when a command starts (never at import). */
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { DEFAULT_ADDRESS, DEFAULT_NAMESPACE, ENV, TASK_QUEUE, WORKER_GC_MODES } from './shared/constants';
import { DurationSchema } from './shared/duration';
import { RateLimitsSchema } from './shared/rate-limits';
import { parseStorageLocation } from './storage';

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
  /** A folder (absolute once parsed) or s3://bucket/prefix. */
  storage: z.string().min(1).default('.faultline'),
  /** For s3:// storage and items: the AWS chain supplies anything not given here. */
  s3: z.object({
    endpoint: z
      .string()
      .regex(/^https?:\/\/[^\s/]+/, `${ENV.s3Endpoint} is http(s)://host[:port]`)
      .optional(),
    region: optionalString,
    forcePathStyle: z.boolean().optional(),
    credentials: z.object({ accessKeyId: z.string().min(1), secretAccessKey: z.string().min(1), sessionToken: optionalString }).optional(),
  }),
  allowedRoots: z.array(z.string().min(1)),
  allowedHosts: z.array(z.string().min(1)),
  secretKey: optionalString,
  /** AES-256 key that encrypts every payload in Temporal (src/codec.ts); old keys only decrypt. */
  payloadKey: optionalString,
  payloadKeysOld: optionalString,
  /** Bearer token `faultline codec-server` requires, when set. */
  codecToken: optionalString,
  /** Token `faultline web` requires; it refuses to bind beyond loopback without one. */
  webToken: optionalString,
  temporalUi: z
    .string()
    .regex(/^https?:\/\/[^\s]+$/, `${ENV.temporalUi} is http(s)://host[:port]`)
    .optional(),
  /** host:port for Prometheus /metrics on worker processes (port 0: any free port). */
  metricsAddress: z
    .string()
    .regex(/^[^\s:]+:\d+$/, `${ENV.metricsAddress} is host:port`)
    .optional(),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  logFormat: z.enum(['json', 'pretty', 'auto']).default('auto'),
  maxConcurrentActivities: z.coerce.number().int().min(1).max(10_000).default(100),
  /** `adaptive`: past 2, a process takes more batches (up to maxConcurrentActivities) only while its event loop has room (src/activity-slots.ts); `fixed`: always maxConcurrentActivities. */
  activitySlots: z.enum(['adaptive', 'fixed']).default('adaptive'),
  shutdownGraceMs: z.number().int().min(0).default(10_000),
  /** Worker processes per `faultline worker` / `faultline dev` (default: one per core). */
  workerProcesses: z.coerce.number().int().min(1).max(256).default(os.availableParallelism()),
  /** V8 heap limit per supervised worker process in MB; 0 leaves V8's default. */
  workerMaxHeapMb: z.coerce.number().int().min(0).max(65_536).default(256),
  /** CPU priority of `faultline worker` processes (nice, 0–19): batch work yields to the server, its database and interactive work on the same machine. */
  workerNice: z.coerce.number().int().min(0).max(19).default(10),
  /** Where supervised worker processes collect garbage: `main-thread` (V8's --single-threaded-gc), `parallel` (V8's helper threads), or `auto`: main-thread when there are at least as many processes as cores. */
  workerGc: z.enum(WORKER_GC_MODES).default('auto'),
  /** Modules of user pipelines (absolute paths) the workers load. */
  pipelineModules: z.array(z.string().min(1)).default([]),
  /** Serve this pipeline task queue instead of the main one. */
  pipelineQueue: optionalString,
  /** Per-key rate limits this worker applies to every job (`{"<key or *>": {perSecond, concurrency}}`); a job's own are applied too. */
  rateLimits: RateLimitsSchema.default({}),
});
export type Config = z.infer<typeof ConfigSchema>;

export class ConfigError extends Error {
  constructor(readonly issues: { path: string; message: string }[]) {
    super(`invalid configuration: ${issues.map((issue) => `${issue.path}: ${issue.message}`).join('; ')}`);
    this.name = 'ConfigError';
  }
}

/** A setting whose value is JSON; not JSON is a ConfigError naming the setting. */
function jsonSetting(value: string | undefined, name: string): unknown {
  if (!value?.trim()) return undefined;
  try {
    return JSON.parse(value) as unknown;
  } catch (error) {
    throw new ConfigError([{ path: name, message: `is not JSON (${(error as Error).message})` }]);
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
  const pathStyle = env[ENV.s3ForcePathStyle];
  const storageValue = env[ENV.storage] || '.faultline';
  let storage: string;
  try {
    // A folder becomes absolute; an s3:// URI stays as given.
    const location = parseStorageLocation(storageValue, cwd);
    storage = location.kind === 'file' ? location.root : storageValue;
  } catch (error) {
    throw new ConfigError([{ path: ENV.storage, message: (error as Error).message }]);
  }
  const raw = {
    address: env[ENV.address] || undefined,
    namespace: env[ENV.namespace] || undefined,
    apiKey: env[ENV.apiKey],
    tlsCert: env[ENV.tlsCert],
    tlsKey: env[ENV.tlsKey],
    tlsCa: env[ENV.tlsCa],
    tlsServerName: env[ENV.tlsServerName],
    taskQueue: env[ENV.taskQueue] || undefined,
    storage,
    s3: {
      endpoint: env[ENV.s3Endpoint] || undefined,
      region: env.AWS_REGION || env.AWS_DEFAULT_REGION,
      forcePathStyle: pathStyle ? !['0', 'false', 'no'].includes(pathStyle.toLowerCase()) : undefined,
      // Given explicitly so an embedding process's own env object counts; otherwise the SDK's chain (profiles, roles) applies.
      credentials:
        env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY ? { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY, sessionToken: env.AWS_SESSION_TOKEN } : undefined,
    },
    allowedRoots: (list(env[ENV.allowedRoots], path.delimiter).length > 0 ? list(env[ENV.allowedRoots], path.delimiter) : [cwd]).map((root) => path.resolve(cwd, root)),
    allowedHosts: list(env[ENV.allowedHosts], ',').map((host) => host.toLowerCase()),
    secretKey: env[ENV.secretKey],
    payloadKey: env[ENV.payloadKey],
    payloadKeysOld: env[ENV.payloadKeysOld],
    codecToken: env[ENV.codecToken],
    webToken: env[ENV.webToken],
    temporalUi: env[ENV.temporalUi]?.replace(/\/+$/, '') || undefined,
    metricsAddress: env[ENV.metricsAddress] || undefined,
    logLevel: env[ENV.logLevel] || undefined,
    logFormat: env[ENV.logFormat] || undefined,
    maxConcurrentActivities: env[ENV.maxConcurrentActivities] || undefined,
    activitySlots: env[ENV.activitySlots] || undefined,
    shutdownGraceMs: parsedGrace?.success ? parsedGrace.data : undefined,
    workerProcesses: env[ENV.workerProcesses] || undefined,
    workerMaxHeapMb: env[ENV.workerMaxHeapMb] || undefined,
    workerNice: env[ENV.workerNice] || undefined,
    workerGc: env[ENV.workerGc] || undefined,
    pipelineModules: list(env[ENV.pipelines], path.delimiter).map((module) => path.resolve(cwd, module)),
    pipelineQueue: env[ENV.pipelineQueue] || undefined,
    rateLimits: jsonSetting(env[ENV.rateLimits], ENV.rateLimits),
  };
  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => {
        // Named as the user set it: the environment variable, where the setting has one.
        const setting = (ENV as Record<string, string>)[String(issue.path[0])];
        return { path: setting ? [setting, ...issue.path.slice(1)].join('.') : issue.path.join('.'), message: issue.message };
      }),
    );
  }
  if (grace && !parsedGrace?.success) throw new ConfigError([{ path: ENV.shutdownGrace, message: `"${grace}" is not a duration` }]);
  return parsed.data;
}
