// Lint rules for Faultline. The workflow rule is what keeps workflow code deterministic:
// workflows run in a sandbox and are replayed, so they must not touch Node builtins, the
// network, logging libraries or the client/worker, and may import activities only as types.
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';

const nodeBuiltins = [
  'assert',
  'buffer',
  'child_process',
  'cluster',
  'crypto',
  'dgram',
  'dns',
  'events',
  'fs',
  'fs/promises',
  'http',
  'http2',
  'https',
  'net',
  'os',
  'path',
  'perf_hooks',
  'process',
  'readline',
  'stream',
  'timers',
  'tls',
  'url',
  'util',
  'v8',
  'vm',
  'worker_threads',
  'zlib',
];

export const workflowImportRestriction = {
  paths: [
    ...nodeBuiltins.map((name) => ({ name, message: 'Workflow code runs in a deterministic sandbox: no Node builtins.' })),
    { name: 'pino', message: 'Workflows log with `log` from @temporalio/workflow.' },
    { name: '@temporalio/client', message: 'Workflows must not use the client.' },
    { name: '@temporalio/worker', message: 'Workflows must not import the worker.' },
    { name: '@temporalio/activity', message: 'Workflows must not import activity code.' },
    { name: 'sharp', message: 'Workflows must not do I/O.' },
    { name: 'undici', message: 'Workflows must not do I/O.' },
    {
      name: '@temporalio/workflow',
      importNames: ['patched'],
      message: 'Ask patches through src/engine/patches.ts: a new workflow answers the baseline patches from one marker.',
    },
  ],
  patterns: [
    { group: ['node:*'], message: 'Workflow code runs in a deterministic sandbox: no Node builtins.' },
    {
      group: ['**/activities', '**/activities/*', '**/worker', '**/client', '**/logger', '**/config', '**/cli/*', '**/devserver/*'],
      allowTypeImports: true,
      message: 'Workflows may import activities only as types (import type ...), and never the worker, client, logger or config.',
    },
    {
      group: ['**/pipelines', '**/pipelines/*', '**/define-pipeline'],
      message: 'The workflow bundle holds no pipeline code or schema: a worker describes the pipeline as plain data (PipelinePlan) when the job starts.',
    },
  ],
};

/** The job workflow registers its updates through `onUpdate`, which notes each answer for `answersLeaveFirst`. */
export const jobUpdateRestriction = {
  selector: "CallExpression[callee.name='setHandler'][arguments.0.name=/Update$/]",
  message: 'Register a job update with onUpdate: it notes the answer, so the job lets it leave before closing (a job that closes in the task that answered an update can hang).',
};

export default tseslint.config(
  {
    ignores: [
      'node_modules/**',
      'dist/**',
      '.temporal/**',
      '.faultline/**',
      'test-artifacts/**',
      'test/fixtures/lint/**',
      'examples/**' /* a user project of its own, type-checked against the packed package: test/integration/package.test.ts */,
      'bin/**',
      '*.mjs',
      'samples/client-example.ts' /* type-checked against the packed package: test/integration/package.test.ts */,
      'samples/embedded-example.ts' /* likewise */,
    ],
  },
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { project: './tsconfig.json', tsconfigRootDir: import.meta.dirname } },
    plugins: { 'import-x': importX },
    rules: {
      '@typescript-eslint/no-floating-promises': ['error', { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite'] }] }],
      '@typescript-eslint/consistent-type-imports': ['error', { prefer: 'type-imports', fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'import-x/no-cycle': 'error',
    },
  },
  {
    // Pipelines are worker code: the workflow bundle never includes them (rule below).
    files: ['src/workflows/**/*.ts', 'src/engine/**/*.ts', 'src/shared/**/*.ts'],
    rules: { '@typescript-eslint/no-restricted-imports': ['error', workflowImportRestriction] },
  },
  {
    files: ['src/workflows/job.ts'],
    rules: { 'no-restricted-syntax': ['error', jobUpdateRestriction] },
  },
  {
    // The one place that asks the SDK, and the frozen v1 engine, which must replay as it ran.
    files: ['src/engine/patches.ts', 'src/workflows/legacy/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': ['error', { ...workflowImportRestriction, paths: workflowImportRestriction.paths.filter((entry) => entry.name !== '@temporalio/workflow') }],
    },
  },
);
