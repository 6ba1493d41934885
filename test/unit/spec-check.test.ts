/**
 * The spec check (`describeSpec`): a CPU-bound pipeline's plan carries the slots its fleet keeps
 * busy (worker processes polling its queue × each one's slots), which its slices size their
 * batches to; an I/O pipeline's does not, and a count that fails leaves the plan without it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MockActivityEnvironment } from '@temporalio/testing';
import { createEngineActivities, type EngineDeps, type SpecDescription } from '../../src/activities/engine';
import { createLogger } from '../../src/logger';
import { builtInPipelines } from '../../src/pipelines';
import { createStorage } from '../../src/storage';
import { crunch } from '../fixtures/crunch';

const registry = { ...builtInPipelines, crunch: crunch.definition, 'crunch-own': { ...crunch.definition, name: 'crunch-own', taskQueue: 'crunch-queue' } };

async function describeWith(pipeline: string, deps: Partial<EngineDeps>): Promise<SpecDescription> {
  const activities = createEngineActivities({
    implementations: {},
    registry,
    storage: createStorage('/nonexistent-faultline-storage'),
    logger: createLogger({ level: 'silent', format: 'json' }),
    allowedHosts: [],
    s3: {},
    taskQueue: 'faultline',
    ...deps,
  });
  const items = pipeline.startsWith('crunch') ? [{ id: 'a', params: { n: 1 } }] : [{ id: 'a' }];
  return (await new MockActivityEnvironment().run(activities.describeSpec, { spec: { pipeline, items } })) as SpecDescription;
}

const planOf = (description: SpecDescription) => {
  assert.ok(description.ok, JSON.stringify(description));
  return description.plan;
};

describe('spec check: the fleet a CPU-bound job sizes its batches to', () => {
  it('counts worker processes on the queue times their slots', async () => {
    const asked: string[] = [];
    const plan = planOf(
      await describeWith('crunch', {
        cpuSlotsPerProcess: 2,
        pollersOf: async (queue) => {
          asked.push(queue);
          return 3;
        },
      }),
    );
    assert.equal(plan.cpuSlots, 6);
    assert.deepEqual(asked, ['faultline'], 'the queue its batches run on');

    // On a queue of its own the same answer says whether any worker polls it and how many: asked once.
    const ownAsked: string[] = [];
    const pollersOf = async (queue: string) => {
      ownAsked.push(queue);
      return 2;
    };
    assert.equal(planOf(await describeWith('crunch-own', { cpuSlotsPerProcess: 2, pollersOf })).cpuSlots, 4);
    assert.deepEqual(ownAsked, ['crunch-queue']);
    const none = await describeWith('crunch-own', { cpuSlotsPerProcess: 2, pollersOf: async () => 0 });
    assert.ok(!none.ok && 'unavailable' in none && /crunch-queue/.test(none.unavailable), JSON.stringify(none));
  });

  it('leaves it out for an I/O pipeline, when no worker is counted, and when the count fails', async () => {
    assert.equal(planOf(await describeWith('synthetic', { cpuSlotsPerProcess: 2, pollersOf: async () => 3 })).cpuSlots, undefined, 'I/O');
    assert.equal(planOf(await describeWith('crunch', { cpuSlotsPerProcess: 2, pollersOf: async () => 0 })).cpuSlots, undefined, 'none listed');
    assert.equal(
      planOf(
        await describeWith('crunch', {
          cpuSlotsPerProcess: 2,
          pollersOf: async () => {
            throw new Error('server unavailable');
          },
        }),
      ).cpuSlots,
      undefined,
      'the count failed: the spec check still passes',
    );
    assert.equal(planOf(await describeWith('crunch', { pollersOf: async () => 3 })).cpuSlots, undefined, 'slots per process unknown');
  });
});
