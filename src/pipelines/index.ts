/** The pipelines this build ships. Clients and workers validate specs against these (workflows never see them). */
import type { PipelineDefinition, PipelineRegistry } from '../shared/pipeline';
import { imagesPipeline } from './images';
import { syntheticPipeline } from './synthetic';
import { deliverPipeline } from './deliver';

/** Built-ins written on the public `definePipeline` API: a worker runs their implementation as is. */
export const builtInApiPipelines = [deliverPipeline, imagesPipeline] as const;

export const builtInPipelines: PipelineRegistry = {
  [syntheticPipeline.definition.name]: syntheticPipeline.definition,
  [imagesPipeline.definition.name]: imagesPipeline.definition,
  [deliverPipeline.definition.name]: deliverPipeline.definition,
};

/** The built-in pipelines and the given ones; a given pipeline may not reuse a built-in's name. */
export function pipelineRegistry(pipelines: readonly { definition: PipelineDefinition }[]): PipelineRegistry {
  const registry: Record<string, PipelineDefinition> = { ...builtInPipelines };
  for (const { definition } of pipelines) {
    if (registry[definition.name] && builtInPipelines[definition.name]) throw new Error(`pipeline "${definition.name}" is a built-in pipeline's name; choose another`);
    if (registry[definition.name]) throw new Error(`two pipelines are named "${definition.name}"`);
    registry[definition.name] = definition;
  }
  return registry;
}
