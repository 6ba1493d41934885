/**
 * `retry --query Q` and `cancel --query Q`: one operation on every job a Temporal visibility query
 * matches, a few at a time, one line (or JSON entry) per job, and an exit code that says whether
 * every job was handled.
 */
import { Presets, SingleBar } from 'cli-progress';
import { FaultlineClientError, type FaultlineClient } from '../client';
import { EXIT_CODES } from '../shared';

/** Jobs handled at once: enough to hide round trips, few enough not to flood the server. */
const BULK_CONCURRENCY = 8;
/** A progress bar (on stderr, on a terminal) from this many jobs on. */
const BAR_FROM = 20;

export interface BulkOutcome {
  jobId: string;
  ok: boolean;
  /** What was done, in words (or why not). */
  message: string;
  detail?: unknown;
  errorCode?: string;
}

export async function runBulk(
  client: FaultlineClient,
  query: string,
  verb: string,
  operate: (jobId: string) => Promise<{ message: string; detail?: unknown }>,
  options: { json?: boolean; runningOnly?: boolean },
): Promise<number> {
  const jobIds = await client.jobIds(query, { runningOnly: options.runningOnly === true });
  const outcomes: BulkOutcome[] = [];
  const bar =
    !options.json && process.stderr.isTTY && jobIds.length >= BAR_FROM
      ? new SingleBar({ format: ` ${verb} {bar} {value}/{total} jobs | failed {failed}`, stream: process.stderr }, Presets.shades_classic)
      : undefined;
  bar?.start(jobIds.length, 0, { failed: 0 });
  let next = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: Math.min(BULK_CONCURRENCY, jobIds.length) }, async () => {
      for (let index = next++; index < jobIds.length; index = next++) {
        const jobId = jobIds[index] as string;
        let outcome: BulkOutcome;
        try {
          const done = await operate(jobId);
          outcome = { jobId, ok: true, message: done.message, ...(done.detail !== undefined ? { detail: done.detail } : {}) };
        } catch (error) {
          failed += 1;
          outcome = { jobId, ok: false, message: error instanceof Error ? error.message : String(error), ...(error instanceof FaultlineClientError ? { errorCode: error.code } : {}) };
        }
        outcomes.push(outcome);
        if (!options.json) {
          bar?.increment(1, { failed });
          if (!bar) console.log(`${jobId}: ${outcome.ok ? '' : 'FAILED: '}${outcome.message}`);
        }
      }
    }),
  );
  bar?.stop();
  if (options.json) console.log(JSON.stringify(outcomes));
  else if (bar) for (const outcome of outcomes) console.log(`${outcome.jobId}: ${outcome.ok ? '' : 'FAILED: '}${outcome.message}`);
  if (!options.json) console.error(`${verb}: ${outcomes.length - failed} of ${jobIds.length} job(s) handled${jobIds.length === 0 ? ' (the query matched no job)' : ''}`);
  return failed > 0 ? EXIT_CODES.rejected : 0;
}
