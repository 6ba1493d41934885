/**
 * The workflow bundle: prebuilt by `npm run build` (dist/workflows.bundle.js) for installed
 * packages and images, otherwise bundled once by whoever starts workers (a supervisor bundles
 * once for all its processes and for every restart).
 */
import { existsSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { bundleWorkflowCode, type BundleOptions } from '@temporalio/worker';
import { tracingWanted, workflowTracingModule } from './tracing';

const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} };

/** The bundle `npm run build` emits next to the compiled code; only used when running compiled code, so a clone's edits are never shadowed by a stale build. */
export function prebuiltWorkflowBundle(): string | undefined {
  if (!__filename.endsWith('.js')) return undefined;
  const file = path.join(__dirname, 'workflows.bundle.js');
  return existsSync(file) ? file : undefined;
}

type WebpackConfigHook = NonNullable<BundleOptions['webpackConfigHook']>;

/** What the bundle's TypeScript compiles to; the SDK's default is ES2017. */
export const WORKFLOW_TARGET = 'es2022';

/**
 * The SDK compiles workflow TypeScript for ES2017, so every object spread becomes a helper that
 * defines each property one by one: a slice's first task spent 45 ms of its ~300 ms in it
 * (`--cpu-prof`, cpu1ms, 2026-12-04). Node runs ES2022 natively, spreads included.
 */
const compileForNode: WebpackConfigHook = (config) => {
  let found = false;
  for (const rule of config.module?.rules ?? []) {
    const use = rule && typeof rule === 'object' ? rule.use : undefined;
    if (!use || typeof use !== 'object' || Array.isArray(use) || typeof use.loader !== 'string' || !use.loader.includes('swc-loader')) continue;
    const options = use.options as { jsc?: { target?: string } } | undefined;
    if (options?.jsc) {
      options.jsc.target = WORKFLOW_TARGET;
      found = true;
    }
  }
  // The SDK's bundler changed shape: say so rather than quietly ship the slow code (a test bundles and checks too).
  if (!found) throw new Error('faultline: the workflow bundler has no swc-loader rule to set its target; @temporalio/worker changed its webpack config');
  return config;
};

/**
 * What every Faultline workflow bundle is made of: the workflows, the shared definitions
 * preloaded once per workflow thread instead of evaluated again by each new workflow (see
 * src/workflows/preload.ts), and code compiled for the Node that runs it.
 */
export function workflowSources(): { workflowsPath: string; preloadModules: string[]; webpackConfigHook: WebpackConfigHook } {
  return { workflowsPath: require.resolve('./workflows'), preloadModules: [require.resolve('./workflows/preload')], webpackConfigHook: compileForNode };
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
