/**
 * Users' own schema objects are the ones Faultline validates with: a pipeline whose params are a
 * zod 4 schema (what `npm install zod` gives today; `zod/v4` here) type-checks as `itemParams`,
 * types each step's `item.params`, and its issues come back with JSON paths and zod's codes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z as z4 } from 'zod/v4';
import { definePipeline } from '../../src';
import { pipelineRegistry } from '../../src/pipelines';
import { validateJobSpec, validateWithSchema } from '../../src/shared';

const scored = definePipeline({
  name: 'scored',
  version: '1',
  outputs: ['score'],
  itemParams: z4.object({ text: z4.string().min(1), weight: z4.number().int().default(1) }),
  steps: [
    {
      name: 'score',
      run: async ({ item }) => {
        const weight: number = item.params.weight;
        // @ts-expect-error `text` is a string, not a number
        const wrong: number = item.params.text;
        void wrong;
        return { score: { status: 'Available', value: { score: item.params.text.length * weight } } };
      },
    },
  ],
});

describe('Standard Schema params (zod 4 schemas)', () => {
  it('validates specs with the user’s zod 4 schema: JSON paths, zod codes, every issue', () => {
    const registry = pipelineRegistry([scored]);
    const bad = validateJobSpec(
      {
        pipeline: 'scored',
        items: [
          { id: 'a', params: { text: '' } },
          { id: 'b', params: { text: 'x', weight: 1.5 } },
        ],
      },
      registry,
    );
    assert.equal(bad.ok, false);
    if (bad.ok) return;
    assert.deepEqual(
      bad.issues.map((issue) => [issue.path, issue.code]),
      [
        ['items[0].params.text', 'too_small'],
        ['items[1].params.weight', 'invalid_type'],
      ],
    );
    assert.equal(validateJobSpec({ pipeline: 'scored', items: [{ id: 'a', params: { text: 'fine' } }] }, registry).ok, true);
  });

  it('gives steps the schema’s output (defaults applied)', () => {
    const result = validateWithSchema(z4.object({ weight: z4.number().default(3) }), {});
    assert.deepEqual(result, { ok: true, value: { weight: 3 } });
  });
});
