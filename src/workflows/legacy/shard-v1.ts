/**
 * A shard of a large job: runs its slice of items with the shared engine and returns a compact
 * summary; its output records go to job storage so no payload grows with the job.
 */
import { CancellationScope, condition, continueAsNew, proxyActivities, workflowInfo, allHandlersFinished } from '@temporalio/workflow';
import type { createEngineActivities } from '../../activities/engine';
import { ItemRunner } from './runner-v1';
import { emptyTally, tallyRecords } from './summary-v1';
import { ApplicationFailure } from '@temporalio/workflow';
import { type OutputRecord, ErrorTypes, outputsForItem, legacyRegistry, resolveJobOptions } from '../../shared';
import type { ShardInput, ShardSummary } from './types-v1';

const RECORDS_PER_PAYLOAD = 2_000;

const engine = proxyActivities<ReturnType<typeof createEngineActivities>>({
  startToCloseTimeout: '5m',
  retry: { maximumAttempts: 5, initialInterval: '1s' },
});

/** Records in payloads of bounded size; the parts are joined into one file. */
async function writeRecordsInChunks(jobId: string, part: string, records: OutputRecord[]): Promise<string> {
  if (records.length <= RECORDS_PER_PAYLOAD) return engine.writeRecords({ jobId, part, records });
  const parts: string[] = [];
  for (let from = 0; from < records.length; from += RECORDS_PER_PAYLOAD) {
    parts.push(await engine.writeRecords({ jobId, part: `${part}-${parts.length}`, records: records.slice(from, from + RECORDS_PER_PAYLOAD) }));
  }
  return engine.joinParts({ jobId, part, parts });
}

export async function shardWorkflow(input: ShardInput): Promise<ShardSummary> {
  const pipeline = legacyRegistry()[input.head.pipeline];
  if (!pipeline) throw ApplicationFailure.create({ type: ErrorTypes.InvalidSpec, message: `unknown pipeline ${input.head.pipeline}`, nonRetryable: true });
  const items = input.items ?? (input.itemsRef ? await engine.loadItems(input.itemsRef) : []);
  const options = { ...resolveJobOptions(input.head, items.length), batchSize: input.batchSize };
  const runner = new ItemRunner(
    {
      job: { jobId: input.jobId, pipeline: input.head.pipeline, params: input.head.params, destination: input.head.destination },
      pipeline,
      options,
      scopeId: workflowInfo().workflowId,
      ...(input.allowedFailures !== undefined ? { allowedFailures: input.allowedFailures } : {}),
    },
    input.resume ?? ItemRunner.initialState(items.map((item) => ({ item, outputs: outputsForItem(input.head, item, pipeline) }))),
  );
  CancellationScope.current().cancelRequested.catch(() => runner.requestStop({ kind: 'cancelled', reason: 'the parent job was cancelled or ended' }));

  return CancellationScope.nonCancellable(async () => {
    const outcome = await runner.run();
    if (outcome === 'rotate') {
      await condition(allHandlersFinished);
      return continueAsNew<typeof shardWorkflow>({ ...input, items: undefined, itemsRef: undefined, resume: runner.snapshot() });
    }
    const records = runner.finalRecords();
    const tally = tallyRecords(emptyTally(), records);
    const recordsLocation = await writeRecordsInChunks(input.jobId, `round-${input.round}-shard-${input.shardIndex}`, records);
    let bytesIn = 0;
    let bytesOut = 0;
    for (const state of runner.states) {
      bytesIn += state.bytesIn ?? 0;
      bytesOut += state.bytesOut ?? 0;
    }
    return {
      shardIndex: input.shardIndex,
      items: runner.states.length,
      counts: tally.counts,
      failureCounts: tally.failureCounts,
      failuresByReason: tally.failuresByReason,
      truncated: tally.truncated,
      errors: tally.errors,
      errorsTruncated: tally.errorsTruncated,
      bytesIn,
      bytesOut,
      attempts: runner.attempts,
      failedItems: tally.failedItems,
      ...(runner.stop?.kind === 'fatal' ? { fatal: runner.stop.report } : {}),
      cancelled: runner.stop?.kind === 'cancelled',
      recordsLocation,
    };
  });
}
