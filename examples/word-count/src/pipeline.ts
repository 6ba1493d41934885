import { appendFileSync } from 'node:fs';
import { z } from 'zod';
import { definePipeline, ItemError } from 'faultline';

export const wordCount = definePipeline({
  name: 'word-count',
  version: '1',
  outputs: ['counts'],
  itemParams: z.object({ text: z.string(), failTimes: z.number().int().optional() }),
  steps: [
    {
      name: 'split',
      run: async ({ item }) => {
        if (process.env.STEP_LOG) appendFileSync(process.env.STEP_LOG, `split ${item.id}\n`);
        return { words: item.params.text.split(/\s+/).filter(Boolean) };
      },
    },
    {
      name: 'count',
      retry: { maxAttempts: 5, initialIntervalMs: 50, backoffCoefficient: 2, maximumIntervalMs: 200 },
      run: async ({ item, input, attempt }) => {
        if (attempt <= (item.params.failTimes ?? 0)) throw new ItemError({ type: 'CounterBusy', class: 'transient', message: 'busy' });
        if (input.words.length === 0) return { counts: { status: 'Missing', reason: 'no words' } };
        if (input.words.includes('poison')) throw new ItemError({ type: 'PoisonWord', class: 'unprocessable', message: 'poison word' });
        return { counts: { status: 'Available', value: { n: input.words.length } } };
      },
    },
  ],
});
