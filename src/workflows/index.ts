// The worker's workflowsPath: every workflow type Faultline registers.
export { archiveWorkflow } from './archive';
export { jobWorkflow } from './job';
export { shardWorkflow } from './shard';
