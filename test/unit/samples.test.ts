/** Every sample spec in samples/ is a valid job spec, so the examples the docs point at never rot. */
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { builtInPipelines } from '../../src/pipelines';
import { validateJobSpec } from '../../src/shared';
import { ROOT } from '../helpers/env';

describe('samples', () => {
  it('every samples/*.json validates, and each built-in pipeline has one', async () => {
    const files = (await readdir(path.join(ROOT, 'samples'))).filter((name) => name.endsWith('.json'));
    const pipelines = new Set<string>();
    for (const file of files) {
      const spec = JSON.parse(await readFile(path.join(ROOT, 'samples', file), 'utf8')) as { pipeline: string };
      const validation = validateJobSpec(spec, builtInPipelines);
      assert.ok(validation.ok, `${file}: ${JSON.stringify(validation.ok ? [] : validation.issues)}`);
      pipelines.add(spec.pipeline);
    }
    assert.deepEqual([...pipelines].sort(), Object.keys(builtInPipelines).sort());
  });
});
