/** Names shared by workers, clients, the CLI, compose and tests. */
export const TASK_QUEUE = 'faultline';
export const DEFAULT_NAMESPACE = 'default';
export const DEFAULT_ADDRESS = 'localhost:7233';
export const DEFAULT_UI_PORT = 8233;

export const SEARCH_ATTRIBUTES = {
  FaultlineStatus: 'Keyword',
  FaultlineHasErrors: 'Bool',
  FaultlineFailedCount: 'Int',
  FaultlinePipeline: 'Keyword',
  FaultlineFlagged: 'Bool',
  FaultlineTenant: 'Keyword',
  FaultlinePriority: 'Int',
} as const;

/**
 * Where supervised worker processes collect garbage (`FAULTLINE_WORKER_GC`). With a process on
 * every core, V8's parallel and concurrent GC threads only take cycles from the other processes'
 * item work: `main-thread` runs V8 with --single-threaded-gc; `auto` does so when there are at
 * least as many processes as cores.
 */
export const WORKER_GC_MODES = ['auto', 'main-thread', 'parallel'] as const;
export type WorkerGcMode = (typeof WORKER_GC_MODES)[number];

export const ENV = {
  address: 'TEMPORAL_ADDRESS',
  namespace: 'TEMPORAL_NAMESPACE',
  apiKey: 'TEMPORAL_API_KEY',
  tlsCert: 'TEMPORAL_TLS_CERT',
  tlsKey: 'TEMPORAL_TLS_KEY',
  tlsCa: 'TEMPORAL_TLS_CA',
  tlsServerName: 'TEMPORAL_TLS_SERVER_NAME',
  taskQueue: 'FAULTLINE_TASK_QUEUE',
  storage: 'FAULTLINE_STORAGE',
  /** An S3-compatible server other than AWS (MinIO, Ceph, R2…), for s3:// job storage and items. */
  s3Endpoint: 'FAULTLINE_S3_ENDPOINT',
  s3ForcePathStyle: 'FAULTLINE_S3_FORCE_PATH_STYLE',
  allowedRoots: 'FAULTLINE_ALLOWED_ROOTS',
  allowedHosts: 'FAULTLINE_ALLOWED_HOSTS',
  rateLimits: 'FAULTLINE_RATE_LIMITS',
  secretKey: 'FAULTLINE_SECRET_KEY',
  logLevel: 'FAULTLINE_LOG_LEVEL',
  logFormat: 'FAULTLINE_LOG_FORMAT',
  maxConcurrentActivities: 'FAULTLINE_MAX_CONCURRENT_ACTIVITIES',
  activitySlots: 'FAULTLINE_ACTIVITY_SLOTS',
  shutdownGrace: 'FAULTLINE_SHUTDOWN_GRACE',
  healthFile: 'FAULTLINE_HEALTH_FILE',
  workerProcesses: 'FAULTLINE_WORKER_PROCESSES',
  workerMaxHeapMb: 'FAULTLINE_WORKER_MAX_HEAP_MB',
  workerNice: 'FAULTLINE_WORKER_NICE',
  workerGc: 'FAULTLINE_WORKER_GC',
  workerNodeArgs: 'FAULTLINE_WORKER_NODE_ARGS',
  /** `1`: bin/faultline.js in a clone runs the compiled dist/ (as the package ships) instead of the sources through tsx. */
  fromDist: 'FAULTLINE_FROM_DIST',
  /** Modules (`:`-separated paths) whose exported pipelines workers serve beside the built-ins. */
  pipelines: 'FAULTLINE_PIPELINES',
  /** A worker for pipelines on their own task queue: it serves that queue instead of the main one. */
  pipelineQueue: 'FAULTLINE_PIPELINE_QUEUE',
  payloadKey: 'FAULTLINE_PAYLOAD_KEY',
  payloadKeysOld: 'FAULTLINE_PAYLOAD_KEYS_OLD',
  codecToken: 'FAULTLINE_CODEC_TOKEN',
  /** Token `faultline web` requires (sign-in or `Authorization: Bearer`); required when it binds beyond loopback. */
  webToken: 'FAULTLINE_WEB_TOKEN',
  /** The Temporal Web UI's URL, for `faultline web`'s links to the same workflow there. */
  temporalUi: 'FAULTLINE_TEMPORAL_UI',
  /** host:port where a worker process serves Prometheus /metrics. */
  metricsAddress: 'FAULTLINE_METRICS_ADDRESS',
  /** Set by a supervisor for its processes: the workflow bundle it built once. */
  workflowBundle: 'FAULTLINE_WORKFLOW_BUNDLE',
} as const;

export const WORKFLOW_TYPES = { job: 'jobWorkflow', slice: 'sliceWorkflow', shard: 'shardWorkflow', archive: 'archiveWorkflow', flag: 'flagWorkflow', rateLimiter: 'rateLimiterWorkflow' } as const;

/** `patched()` ids of workflow changes that running jobs may replay (never reuse or rename). */
export const PATCHES = {
  /** The v2 engine (JobRun, slices); jobs recorded before it replay the frozen v1 code. */
  engineV2: 'faultline-engine-v2',
  /** A closing job releases its working copies and reports its storage use. */
  retention: 'faultline-retention',
  /** A Failed job ends as a failed execution (JobResult in the details), one cancelled through Temporal as a cancelled one (JobResult in the memo). */
  failedExecutions: 'faultline-failed-executions',
  /** Engine v3: byte budgets, the carried failure allowance, prompt thresholds, reads by query. */
  engineV3: 'faultline-engine-v3',
  /** A worker validates the spec and describes the pipeline (plain data); the workflow holds no pipeline. */
  workerPipelines: 'faultline-worker-pipelines',
  /** A round stopped by a fatal error still answers cancels while its in-flight batches finish. */
  answerWhileStopping: 'faultline-answer-while-stopping',
  /** A settling round writes its records where `options.export` says. */
  resultExport: 'faultline-result-export',
  /** The spec check (describeSpec) runs as a local activity. */
  localSpecCheck: 'faultline-local-spec-check',
  /** A small job releases its working copies by local activity. */
  localRelease: 'faultline-local-release',
  /** `set --priority` updates the job's FaultlinePriority search attribute. */
  priorityAttribute: 'faultline-priority-attribute',
  /** A job whose items fit one batch runs that batch's first run as a local activity (no wait for an activity slot). */
  localSmallJob: 'faultline-local-small-job',
  /** A stored slice's batches name their items by place in the pinned items and keep their records in job storage. */
  itemsByReference: 'faultline-items-by-reference',
  /** Jobs above 100,000 items default to batches of up to 1,000 items and slices of up to 10,000. */
  largeJobSizing: 'faultline-large-job-sizing',
  /** Jobs above 100,000 items default to batches of up to 5,000 items and slices of up to 20,000. */
  largeJobSizingV2: 'faultline-large-job-sizing-v2',
  /** A stored slice's batches write what they finished to job storage at each heartbeat, which names the parts instead of carrying the records. */
  storedBeats: 'faultline-stored-beats',
  /** A slice child keeps its counts so far in its memo (`SLICE_PROGRESS_MEMO_KEY`), so progress reads them from the server. */
  sliceProgressMemo: 'faultline-slice-progress-memo',
  /** A job running a sliced round keeps its progress in its memo (`JOB_PROGRESS_MEMO_KEY`), so progress needs no query to a busy worker. */
  jobProgressMemo: 'faultline-job-progress-memo',
  /** A job keeps its progress in its memo while a worker imports or checks its items, or assembles a sliced round's records (minutes at millions of items). */
  longStepProgressMemo: 'faultline-long-step-progress-memo',
  /** A large batch lost with its worker re-runs its unfinished items in halves (halved again at each loss), not one activity per item. */
  bisectLostBatches: 'faultline-bisect-lost-batches',
  /** A job that closes when settled and runs as one local batch has that batch release its working copies (one local activity less). */
  releaseInLocalBatch: 'faultline-release-in-local-batch',
  /** Every patch in PATCH_BASELINE_1 at once: one marker where a workflow recorded one marker and one search-attribute upsert per patch. */
  baseline1: 'faultline-patch-baseline-1',
  /** A job that answered an update in the workflow task where it would close or continue as new sends those answers in a task of their own first. */
  answersBeforeClose: 'faultline-answers-before-close',
  /**
   * A `work: 'cpu'` slice keeps at most `CPU_WORK_SIZES.batchesAhead` batches in flight: the server
   * hands out batches scheduled together in any order, and a large one started last kept one worker
   * process busy ~0.4 s after the other ran out of work.
   */
  guidedInFlight: 'faultline-guided-in-flight',
  /** A stopped stored slice's items that never ran get their Cancelled records from the pinned items by place, where its records are written, not through its history. */
  cancelledByPlace: 'faultline-cancelled-by-place',
  /** A stopping job tells its running slices why (a signal before their cancellation), so their unfinished items' records give the job's reason. */
  sliceStopReason: 'faultline-slice-stop-reason',
  /** A `work: 'cpu'` slice's first batches shrink one after another (`firstWaveBatchSize`), so the two on one process do not end together. */
  staggeredFirstWave: 'faultline-staggered-first-wave',
} as const;

/**
 * The patches `PATCHES.baseline1` stands for: every one that existed when it was added. Fixed for
 * good: a workflow recorded with that marker ran exactly these, so a later patch is never added.
 */
export const PATCH_BASELINE_1: readonly string[] = [
  PATCHES.engineV2,
  PATCHES.retention,
  PATCHES.failedExecutions,
  PATCHES.engineV3,
  PATCHES.workerPipelines,
  PATCHES.localSpecCheck,
  PATCHES.resultExport,
  PATCHES.localRelease,
  PATCHES.answerWhileStopping,
  PATCHES.localSmallJob,
  PATCHES.priorityAttribute,
  PATCHES.itemsByReference,
  PATCHES.largeJobSizing,
  PATCHES.largeJobSizingV2,
  PATCHES.storedBeats,
  PATCHES.sliceProgressMemo,
  PATCHES.jobProgressMemo,
  PATCHES.longStepProgressMemo,
  PATCHES.bisectLostBatches,
  PATCHES.releaseInLocalBatch,
];

/** A lost batch with more unfinished items than this runs them again in halves; this many or fewer run one per activity. */
export const ISOLATE_AT_MOST = 4;

/** Slice child workflows running at once per job. */
export const MAX_PARALLEL_SLICES = 8;

export function sliceWorkflowId(jobId: string, sliceIndex: number, round: number): string {
  return `${jobId}/slice-${sliceIndex}-r${round}`;
}

/** The slice index in a workflow id of `jobId`'s slice of `round` (`sliceWorkflowId`'s inverse): one index, or none. */
export function sliceIndexOf(jobId: string, workflowId: string, round: number): [number] | [] {
  const prefix = `${jobId}/slice-`;
  const suffix = `-r${round}`;
  if (!workflowId.startsWith(prefix) || !workflowId.endsWith(suffix)) return [];
  const index = workflowId.slice(prefix.length, -suffix.length);
  return /^(0|[1-9]\d*)$/.test(index) ? [Number(index)] : [];
}

export function shardWorkflowId(jobId: string, shardIndex: number): string {
  return `${jobId}/shard-${shardIndex}`;
}
export function archiveWorkflowId(jobId: string, round: number): string {
  return `${jobId}/archive-${round}`;
}
/** A flag set on a closed job (`n` counts from 1). */
export function flagWorkflowId(jobId: string, n: number): string {
  return `${jobId}/flag-${n}`;
}
export function batchActivityId(scope: string, seq: number): string {
  return `${scope}/batch-${seq}`;
}
export function followUpJobId(jobId: string, attempt: number): string {
  return `${jobId}.retry-${attempt}`;
}
export function newJobId(random: string): string {
  return `job-${random}`;
}
