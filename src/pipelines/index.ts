/** The pipelines this build ships. Clients, the CLI and workflows validate specs against these. */
import type { PipelineRegistry } from '../shared/pipeline';
import { imagesPipeline } from './images';
import { syntheticPipeline } from './synthetic';

export const builtInPipelines: PipelineRegistry = {
  [syntheticPipeline.name]: syntheticPipeline,
  [imagesPipeline.name]: imagesPipeline,
};
