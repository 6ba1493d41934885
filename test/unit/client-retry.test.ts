/**
 * Issue 18, item 12: a retry whose RPC times out (a long round still running) is sent again with
 * the same update id, so the server runs it once — never two rounds. Checked on the client alone,
 * with a job handle that times out twice before answering.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WorkflowUpdateRPCTimeoutOrCancelledError } from '@temporalio/client';
import { FaultlineClient } from '../../src/client';

describe('client retry re-sends', () => {
  it('every re-send of one retry carries the same update id', async () => {
    const ids: (string | undefined)[] = [];
    const handle = {
      describe: async () => ({ status: { name: 'RUNNING' } }),
      executeUpdate: async (_update: unknown, options: { updateId?: string }) => {
        ids.push(options.updateId);
        if (ids.length < 3) throw new WorkflowUpdateRPCTimeoutOrCancelledError('the RPC timed out');
        return { queued: ['a'], queuedCount: 1, round: 2 };
      },
    };
    // A client whose job handle is the fake above; nothing else of it is used by retry().
    const client = Object.create(FaultlineClient.prototype) as FaultlineClient;
    Object.assign(client, { options: { config: { address: 'unused:7233' } }, handle: () => handle });
    const response = await client.retry('job-1', {});
    assert.deepEqual([response.round, response.followUp], [2, false]);
    assert.equal(ids.length, 3);
    assert.ok(ids[0], 'the update has an id of its own');
    assert.deepEqual(new Set(ids).size, 1, `one id for every re-send: ${ids.join(', ')}`);
  });
});
