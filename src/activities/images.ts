import type { Logger } from 'pino';
import type { Storage } from '../storage';
import type { PipelineImplementation } from './types';

export interface ImagesDeps {
  storage: Storage;
  allowedRoots: string[];
  allowedHosts: string[];
  logger: Logger;
}

export function createImagesPipeline(_deps: ImagesDeps): PipelineImplementation {
  return {
    name: 'images',
    processItem() {
      throw new Error('images pipeline: work in progress');
    },
  };
}
