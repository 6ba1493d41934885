// The worker's workflowsPath: every workflow type Faultline registers.
export { archiveWorkflow } from './archive';
export { flagWorkflow } from './flag';
export { jobWorkflow } from './job';
export { sliceWorkflow } from './slice';
export { rateLimiterWorkflow } from './rate-limiter';
// v1 shards: still registered so shards of jobs started before engine v2 can finish and replay.
export { shardWorkflow } from './legacy/shard-v1';
