/**
 * The workflow bundle: prebuilt by `npm run build` (dist/workflows.bundle.js) for installed
 * packages and images, otherwise bundled once by whoever starts workers (a supervisor bundles
 * once for all its processes and for every restart).
 */
import { existsSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import { tracingWanted, workflowTracingModule } from './tracing';

const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} };

/** The bundle `npm run build` emits next to the compiled code; only used when running compiled code, so a clone's edits are never shadowed by a stale build. */
export function prebuiltWorkflowBundle(): string | undefined {
  if (!__filename.endsWith('.js')) return undefined;
  const file = path.join(__dirname, 'workflows.bundle.js');
  return existsSync(file) ? file : undefined;
}

/**
 * What every Faultline workflow bundle is made of: the workflows, and the shared definitions
 * preloaded once per workflow thread instead of evaluated again by each new workflow (see
 * src/workflows/preload.ts).
 */
export function workflowSources(): { workflowsPath: string; preloadModules: string[] } {
  return { workflowsPath: require.resolve('./workflows'), preloadModules: [require.resolve('./workflows/preload')] };
}

/** Bundles src/workflows into `file` (written whole, then renamed, so a reader never sees half a bundle). */
export async function writeWorkflowBundle(file: string): Promise<string> {
  // With tracing on, the interceptors that carry trace context through workflows are bundled too.
  const { code } = await bundleWorkflowCode({ ...workflowSources(), logger: quiet, ...(tracingWanted() ? { workflowInterceptorModules: [workflowTracingModule()] } : {}) });
  await mkdir(path.dirname(file), { recursive: true });
  const partial = `${file}.${process.pid}.partial`;
  await writeFile(partial, code);
  await rename(partial, file);
  return file;
}
