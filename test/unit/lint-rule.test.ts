import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ESLint } from 'eslint';
import { workflowBundle } from '../helpers/env';

const ROOT = path.resolve(__dirname, '..', '..');

// Lints snippets as if they were workflow files, with the project's real ESLint config.
async function lintAsWorkflow(code: string, file = 'src/workflows/probe.ts', rule = '@typescript-eslint/no-restricted-imports') {
  const eslint = new ESLint({
    cwd: ROOT,
    overrideConfig: [
      {
        files: ['**/*.ts'],
        languageOptions: { parserOptions: { project: false, projectService: false } },
        rules: { '@typescript-eslint/no-floating-promises': 'off' },
      },
    ],
  });
  const [result] = await eslint.lintText(code, { filePath: path.join(ROOT, file) });
  return (result?.messages ?? []).filter((message) => message.ruleId === rule);
}

describe('workflow import restriction (ESLint)', () => {
  it('rejects Node builtins, pino, the client, the worker and value imports of activities', async () => {
    const bad = [
      "import fs from 'node:fs';",
      "import { readFile } from 'fs';",
      "import pino from 'pino';",
      "import { Client } from '@temporalio/client';",
      "import { Worker } from '@temporalio/worker';",
      "import { createEngineActivities } from '../activities/engine';",
      "import { patched } from '@temporalio/workflow';",
    ];
    for (const line of bad) {
      const messages = await lintAsWorkflow(`${line}\nexport const x = 1;\n`);
      assert.ok(messages.length >= 1, `should reject: ${line}`);
    }
  });

  it('rejects any import of a pipeline (code or schema), even a type-only one', async () => {
    for (const line of ["import { builtInPipelines } from '../pipelines';", "import { imagesPipeline } from '../pipelines/images';", "import type { Pipeline } from '../define-pipeline';"]) {
      for (const file of ['src/workflows/probe.ts', 'src/engine/probe.ts']) {
        const messages = await lintAsWorkflow(`${line}\nexport const x = 1;\n`, file);
        assert.equal(messages.length, 1, `${file} should reject: ${line}`);
        assert.match(messages[0]?.message ?? '', /no pipeline code or schema/);
      }
    }
  });

  it('allows type-only imports of activities and the workflow SDK', async () => {
    const messages = await lintAsWorkflow(
      "import type { createEngineActivities } from '../activities/engine';\nimport { proxyActivities } from '@temporalio/workflow';\nexport type A = typeof createEngineActivities;\nexport const p = proxyActivities;\n",
    );
    assert.deepEqual(messages, []);
  });

  it("asks patches only through src/engine/patches.ts (and the frozen v1 engine), where the baseline's one marker answers them", async () => {
    const line = "import { patched } from '@temporalio/workflow';\nexport const p = patched;\n";
    assert.match((await lintAsWorkflow(line, 'src/engine/probe.ts'))[0]?.message ?? '', /src\/engine\/patches\.ts/);
    assert.deepEqual(await lintAsWorkflow(line, 'src/engine/patches.ts'), []);
    assert.deepEqual(await lintAsWorkflow(line, 'src/workflows/legacy/probe.ts'), []);
  });

  it('applies to the engine helpers workflows import, not to activities', async () => {
    assert.equal((await lintAsWorkflow("import fs from 'node:fs';\nexport const x = fs;\n", 'src/engine/probe.ts')).length, 1);
    assert.equal((await lintAsWorkflow("import fs from 'node:fs';\nexport const x = fs;\n", 'src/activities/probe.ts')).length, 0);
  });

  it('the job workflow registers updates only through onUpdate (which notes the answer for answersLeaveFirst); signals and queries as before', async () => {
    const imports = "import { setHandler } from '@temporalio/workflow';\nimport { cancelUpdate, cancelSignal, progressQuery } from '../shared';\n";
    const direct = await lintAsWorkflow(
      `${imports}setHandler(cancelUpdate, async () => ({ cancelled: true }));\nexport const x = [cancelSignal, progressQuery];\n`,
      'src/workflows/job.ts',
      'no-restricted-syntax',
    );
    assert.equal(direct.length, 1);
    assert.match(direct[0]?.message ?? '', /onUpdate/);
    const others = `${imports}setHandler(cancelSignal, () => undefined);\nsetHandler(progressQuery, () => 1);\nexport const x = cancelUpdate;\n`;
    assert.deepEqual(await lintAsWorkflow(others, 'src/workflows/job.ts', 'no-restricted-syntax'), []);
    // The real file passes: every update goes through onUpdate. Only this rule is asked here: the
    // type-aware rules are `npm run lint`'s (once, in CI, a type-aware rule crashed inside
    // TypeScript's module-specifier code in this test alone; nothing here needs type information).
    const real = await readFile(path.join(ROOT, 'src/workflows/job.ts'), 'utf8');
    assert.match(real, /onUpdate\(/);
    assert.deepEqual(await lintAsWorkflow(real, 'src/workflows/job.ts', 'no-restricted-syntax'), []);
  });

  it('the workflow bundle holds no pipeline code or schema (descriptions, params schemas, step code of every built-in)', async () => {
    const { code } = await workflowBundle();
    for (const marker of ['Fetch images (file or http)', 'maxSourceBytes', 'Items that declare their own CPU work', 'idempotencyHeader', 'faultline.endItem', 'sharp']) {
      assert.ok(!code.includes(marker), `the workflow bundle contains "${marker}"`);
    }
  });
});
