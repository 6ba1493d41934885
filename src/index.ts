/** Public API of the faultline package. */
export { FaultlineClient, FaultlineClientError, type FaultlineClientOptions, type JobListEntry, type JobSnapshot, type ListFilter } from './client';
export { loadConfig, type Config } from './config';
export { verifyWebhookSignature, SIGNATURE_HEADER } from './secrets';
export { createFaultlineWorker, runWorker } from './worker';
export { definePipeline, endItem, httpHost, type Pipeline, type PipelineInput, type StepContext, type StepItem, type OutputResult, type ItemOutputs } from './define-pipeline';
export { ItemError, type PipelineImplementation, type ItemContext, type ItemWork } from './activities/types';
export * from './shared';
