// Workflows of the bench worker: Faultline's plus the naive baseline.
export * from '../src/workflows';
export { naiveWorkflow } from './naive-workflow';
