/** Loads users' pipeline modules (`faultline worker --pipelines ./dist/my-pipelines.js`). */
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { ConfigError } from './config';
import type { Pipeline } from './define-pipeline';
import { ENV } from './shared/constants';

function isPipeline(value: unknown): value is Pipeline {
  const candidate = value as Partial<Pipeline> | null;
  return typeof candidate === 'object' && candidate !== null && typeof candidate.definition?.name === 'string' && typeof candidate.implementation?.processItem === 'function';
}

/** Every pipeline a module exports (default or named, or an array of them); a module with none is a configuration error. */
export async function loadPipelineModules(modules: readonly string[]): Promise<Pipeline[]> {
  const pipelines: Pipeline[] = [];
  for (const module of modules) {
    if (!existsSync(module)) throw new ConfigError([{ path: ENV.pipelines, message: `pipeline module ${module} does not exist` }]);
    let exported: Record<string, unknown>;
    try {
      exported = await loadModule(module);
    } catch (error) {
      throw new ConfigError([{ path: ENV.pipelines, message: `pipeline module ${module} failed to load: ${(error as Error).message.split('\n')[0]}` }]);
    }
    const found = new Set<Pipeline>();
    const collect = (value: unknown) => {
      if (isPipeline(value)) found.add(value);
      else if (Array.isArray(value)) value.forEach(collect);
    };
    for (const value of Object.values(exported)) {
      collect(value);
      // A CommonJS module imported from ESM: its exports sit under `default`.
      if (value && typeof value === 'object' && !isPipeline(value) && !Array.isArray(value)) Object.values(value).forEach(collect);
    }
    if (found.size === 0) throw new ConfigError([{ path: ENV.pipelines, message: `pipeline module ${module} exports no pipeline (make one with definePipeline and export it)` }]);
    pipelines.push(...found);
  }
  return pipelines;
}

/** CommonJS (and TypeScript under a require hook) by require; ES modules by import. */
async function loadModule(module: string): Promise<Record<string, unknown>> {
  if (!module.endsWith('.mjs')) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a user's module path, known only at run time
      return require(module) as Record<string, unknown>;
    } catch (error) {
      if ((error as { code?: string }).code !== 'ERR_REQUIRE_ESM') throw error;
    }
  }
  return (await import(pathToFileURL(module).href)) as Record<string, unknown>;
}
