// The worker's workflowsPath: every workflow type Faultline registers.
export { jobWorkflow } from './job';
export { shardWorkflow } from './shard';
