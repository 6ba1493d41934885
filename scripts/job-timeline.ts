/**
 * Where a benched job's time went, from the histories `npm run bench -- --dump-histories=DIR` wrote:
 * its head (the client's start until the first batch starts), the window its batches ran in, its
 * tail (the last batch's end until the result was held), and per worker process the time inside
 * that window with no batch of the job running and the most batches it ran at once.
 *
 *   npx tsx scripts/job-timeline.ts DIR [jobId]   (default: the job that took longest, the measured one)
 */
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';

interface HistoryEvent {
  eventId: string;
  eventTime?: { seconds: string | number; nanos?: number };
  activityTaskScheduledEventAttributes?: { activityType?: { name?: string } };
  activityTaskStartedEventAttributes?: { scheduledEventId: string; identity?: string };
  activityTaskCompletedEventAttributes?: { scheduledEventId: string };
}

const atMs = (event: HistoryEvent): number => Number(event.eventTime?.seconds ?? 0) * 1000 + (event.eventTime?.nanos ?? 0) / 1e6;

/** The batches of one slice history: who ran each, from when to when (ms since the job's start). */
function batchesOf(events: HistoryEvent[], startMs: number): { worker: string; from: number; to: number }[] {
  const scheduled = new Map<string, string>();
  const started = new Map<string, { worker: string; at: number }>();
  const batches: { worker: string; from: number; to: number }[] = [];
  for (const event of events) {
    const type = event.activityTaskScheduledEventAttributes?.activityType?.name;
    if (type) scheduled.set(String(event.eventId), type);
    const start = event.activityTaskStartedEventAttributes;
    if (start && scheduled.get(String(start.scheduledEventId)) === 'runBatch') started.set(String(start.scheduledEventId), { worker: start.identity ?? '?', at: atMs(event) - startMs });
    const done = event.activityTaskCompletedEventAttributes;
    const run = done && started.get(String(done.scheduledEventId));
    if (run) batches.push({ worker: run.worker, from: run.at, to: atMs(event) - startMs });
  }
  return batches;
}

function main(): void {
  const [dir, wanted] = process.argv.slice(2);
  if (!dir) throw new Error('usage: npx tsx scripts/job-timeline.ts DIR [jobId]  (DIR as given to npm run bench -- --dump-histories=DIR)');
  const files = readdirSync(dir);
  const times = files
    .filter((file) => file.endsWith('.times.json'))
    .map((file) => ({ jobId: file.slice(0, -'.times.json'.length), ...(JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as { startAtMs: number; resultAtMs: number }) }))
    .sort((a, b) => b.resultAtMs - b.startAtMs - (a.resultAtMs - a.startAtMs));
  const job = wanted ? times.find((candidate) => candidate.jobId === wanted) : times[0];
  if (!job) throw new Error(`no job ${wanted ?? ''} with times in ${dir} (run the bench with --dump-histories=${dir})`);
  const batches = files
    .filter((file) => file.startsWith(`${job.jobId}__slice-`) && file.endsWith('.json'))
    .flatMap((file) => batchesOf(JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as HistoryEvent[], job.startAtMs));
  if (batches.length === 0) throw new Error(`job ${job.jobId} ran no batch in a slice`);
  const first = Math.min(...batches.map((batch) => batch.from));
  const last = Math.max(...batches.map((batch) => batch.to));
  const total = job.resultAtMs - job.startAtMs;
  console.log(`${job.jobId}: ${Math.round(total)} ms — head ${Math.round(first)} ms, batches' window ${Math.round(last - first)} ms, tail ${Math.round(total - last)} ms; ${batches.length} batches`);
  for (const worker of [...new Set(batches.map((batch) => batch.worker))].sort()) {
    const own = batches.filter((batch) => batch.worker === worker).sort((a, b) => a.from - b.from);
    let busy = 0;
    let until = -Infinity;
    for (const batch of own) {
      busy += Math.max(0, batch.to - Math.max(batch.from, until));
      until = Math.max(until, batch.to);
    }
    const edges = own.flatMap((batch) => [
      { at: batch.from, change: 1 },
      { at: batch.to, change: -1 },
    ]);
    edges.sort((a, b) => a.at - b.at || a.change - b.change);
    let running = 0;
    let most = 0;
    for (const edge of edges) most = Math.max(most, (running += edge.change));
    console.log(`  ${worker}: ${own.length} batches, idle ${Math.round(last - first - busy)} ms of the window, at most ${most} at once`);
  }
}

main();
