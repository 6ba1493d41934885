/** Human-readable rendering of results and progress for the CLI and the demo. */
import { SingleBar, Presets } from 'cli-progress';
import type { FaultlineClient } from '../client';
import type { JobProgress, JobResult, OutputRecord } from '../shared';

/** Splits text into lines of at most `width` characters, at spaces where it can. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let rest = text;
  while (rest.length > width) {
    const space = rest.lastIndexOf(' ', width);
    const cut = space > width / 2 ? space : width;
    lines.push(rest.slice(0, cut).trimEnd());
    rest = rest.slice(cut).trimStart();
  }
  lines.push(rest);
  return lines;
}

function truncate(text: string, width: number): string {
  return text.length > width ? `${text.slice(0, width - 1)}…` : text;
}

export function renderOutputsTable(outputs: readonly OutputRecord[]): string {
  const rows = outputs.map((record) => [
    record.item,
    record.output,
    record.status,
    record.error
      ? `${record.error.type} (${record.error.class}${record.error.attempts ? `, ${record.error.attempts} attempt(s)` : ''}): ${record.error.message}`
      : (record.reason ?? record.location ?? ''),
  ]);
  const header = ['ITEM', 'OUTPUT', 'STATUS', 'DETAIL'];
  const widths = header.map((title, column) => Math.min(column === 3 ? 90 : 28, Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length))));
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => truncate(cell, widths[column] ?? 20).padEnd(widths[column] ?? 20))
      .join('  ')
      .trimEnd();
  // The detail wraps onto further lines instead of being cut: an error's message is the point.
  const detailWidth = widths[3] ?? 90;
  const indent = ' '.repeat(widths.slice(0, 3).reduce((sum, width) => sum + width + 2, 0));
  const row = (cells: string[]) => {
    const [first, ...rest] = wrap(cells[3] ?? '', detailWidth);
    return [line([...cells.slice(0, 3), first ?? '']), ...rest.map((part) => `${indent}${part}`)].join('\n');
  };
  return [line(header), line(widths.map((width) => '-'.repeat(width))), ...rows.map(row)].join('\n');
}

/** Running time apart from time spent waiting in retry windows (older results have only the total). */
function timing(metrics: JobResult['metrics']): string {
  if (metrics.runMs === undefined || !metrics.waitingMs) return `${metrics.elapsedMs} ms`;
  const round = metrics.round ? `; this round ${metrics.round.runMs} ms for ${metrics.round.items} item(s), ${metrics.round.itemsPerSec} items/s` : '';
  return `ran ${metrics.runMs} ms, waited ${metrics.waitingMs} ms in retry windows${round}`;
}

export function renderResult(result: JobResult): string {
  const c = result.counts;
  const lines = [
    `job ${result.jobId} (${result.pipeline}, round ${result.round}): ${result.status}, success=${result.success}`,
    `  ${c.items} item(s), ${c.outputs} output(s): Available ${c.Available} · Missing ${c.Missing} · Failed ${c.Failed} · Unsolved ${c.Unsolved} · Skipped ${c.Skipped} · Cancelled ${c.Cancelled}`,
    `  ${timing(result.metrics)}, ${result.metrics.attempts} item run(s), ${result.metrics.itemsPerSec} items/s`,
  ];
  if (result.cancelReason) lines.push(`  cancelled: ${result.cancelReason}`);
  if (result.outputs) lines.push('', renderOutputsTable(result.outputs));
  if (result.manifest) lines.push(`  outputs: ${result.manifest}`);
  const failures = Object.entries(result.failuresByReason);
  if (failures.length > 0) {
    lines.push('', 'failures by reason:');
    for (const [type, ids] of failures) lines.push(`  ${type}: ${result.failureCounts[type] ?? ids.length} — ${truncate(ids.join(', '), 100)}`);
  }
  const fatal = result.errors.filter((error) => error.class === 'fatal');
  for (const error of fatal) lines.push(`fatal: ${error.type}: ${error.message}`);
  if (result.archive) {
    const a = result.archive;
    lines.push(a.location ? `archive: ${a.location} (${a.files} file(s), ${a.missing} missing)` : `archive: ${a.skipped ?? a.error?.message ?? 'not written'}`);
  }
  for (const note of result.notifications ?? [])
    lines.push(`webhook ${note.url}: ${note.delivered ? 'delivered' : 'NOT delivered'} after ${note.attempts} attempt(s)${note.lastStatus ? ` (last status ${note.lastStatus})` : ''}`);
  return lines.join('\n');
}

export function printResult(result: JobResult, json: boolean): void {
  console.log(json ? JSON.stringify(result) : renderResult(result));
}

export function printProgress(progress: JobProgress, json: boolean): void {
  if (json) {
    console.log(JSON.stringify(progress));
    return;
  }
  const c = progress.counts;
  console.log(`job ${progress.jobId} (${progress.pipeline}) round ${progress.round}: ${progress.phase}${progress.settled ? ' (settled)' : ''}`);
  console.log(
    `  outputs ${c.outputs}: Available ${c.Available} · Missing ${c.Missing} · Failed ${c.Failed} · Unsolved ${c.Unsolved} · Skipped ${c.Skipped} · Cancelled ${c.Cancelled}; batches in flight ${progress.inFlight}`,
  );
  if (progress.shards.total > 0) console.log(`  slices ${progress.shards.done}/${progress.shards.total}`);
  if (progress.retryWindowEndsAt) console.log(`  open for retry until ${progress.retryWindowEndsAt} (faultline retry ${progress.jobId})`);
  if (progress.paused) console.log(`  paused (faultline resume ${progress.jobId})`);
  if (progress.pendingRequests > 0) console.log(`  ${progress.pendingRequests} request(s) waiting for the round to settle`);
  for (const rejected of progress.rejectedRequests.slice(-5)) console.log(`  rejected ${rejected.kind} (${rejected.origin}): ${rejected.type}: ${rejected.reason}`);
  for (const key of progress.rateLimits ?? []) {
    console.log(
      `  rate key ${key.key}: ${key.waiting} waiting, ${key.inFlight} in flight (all jobs: ${key.keyWaiting} waiting, ${key.keyInFlight} in flight); limit ${key.perSecond}/s, ${key.concurrency} at once; now ${key.effectivePerSecond}/s${key.blockedUntil ? `; paused by the host until ${key.blockedUntil}` : ''}`,
    );
  }
  for (const entry of progress.backoff) console.log(`  waiting: ${entry.item} after ${entry.attempts} failure(s) (${entry.errorType}); next attempt ${entry.nextAttemptAt}`);
}

function doneOutputs(progress: JobProgress): number {
  const c = progress.counts;
  return c.Available + c.Missing + c.Failed + c.Unsolved + c.Skipped + c.Cancelled;
}

/**
 * Progress until the job settles; returns the result. On a terminal: a live bar on stderr. Without
 * one (a script, a log): a line per change on stderr, or with `json` a JSON line per change on stdout.
 */
export async function watchJob(client: FaultlineClient, jobId: string, options: { json?: boolean; intervalMs?: number; interactive?: boolean } = {}): Promise<JobResult> {
  const interactive = options.interactive ?? (process.stderr.isTTY === true && !options.json);
  const bar = interactive
    ? new SingleBar({ format: ' {bar} {percentage}% | {value}/{total} outputs | {phase} | failed {failed} | backoff {backoff}', stream: process.stderr, hideCursor: true }, Presets.shades_classic)
    : undefined;
  let started = false;
  let last = '';
  try {
    for (;;) {
      let progress: JobProgress;
      try {
        progress = await client.progress(jobId);
      } catch {
        break; // closed job without a worker to answer queries: fall through to the result
      }
      const done = doneOutputs(progress);
      if (bar) {
        if (!started) bar.start(Math.max(1, progress.counts.outputs), 0, { phase: progress.phase, failed: 0, backoff: 0 });
        started = true;
        bar.setTotal(Math.max(1, progress.counts.outputs));
        bar.update(done, { phase: progress.phase, failed: progress.counts.Failed, backoff: progress.backoff.length });
      } else {
        const change = JSON.stringify([progress.phase, progress.round, progress.counts, progress.backoff.length, progress.paused]);
        if (change !== last) {
          last = change;
          if (options.json) {
            console.log(
              JSON.stringify({ jobId, at: new Date().toISOString(), phase: progress.phase, round: progress.round, paused: progress.paused, counts: progress.counts, backoff: progress.backoff.length }),
            );
          } else {
            console.error(
              `${new Date().toISOString()} ${jobId}: ${progress.phase}${progress.paused ? ' (paused)' : ''}, ${done}/${progress.counts.outputs} outputs, ${progress.counts.Failed} failed, ${progress.backoff.length} in backoff`,
            );
          }
        }
      }
      if (progress.settled) break;
      await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 500));
    }
  } finally {
    if (started) bar?.stop();
  }
  return client.result(jobId);
}
