/**
 * `faultline gc --older-than 7d`: removes the job storage (records, manifests, working copies) of
 * jobs that closed before the cut-off. An open job's storage is never touched; a directory whose
 * job Temporal no longer knows goes by its own age.
 */
import type { Storage } from '../storage';
import { FaultlineClientError, type FaultlineClient } from '../client';
import { DurationSchema } from '../shared/duration';

export interface GcReport {
  olderThanMs: number;
  dryRun: boolean;
  removed: { jobId: string; bytes: number; closedAt?: string }[];
  kept: { jobId: string; reason: string }[];
  freedBytes: number;
}

export async function collectGarbage(client: FaultlineClient, storage: Storage, olderThanMs: number, dryRun: boolean): Promise<GcReport> {
  const cutoff = Date.now() - olderThanMs;
  const report: GcReport = { olderThanMs, dryRun, removed: [], kept: [], freedBytes: 0 };
  for await (const { jobId, bytes, modifiedMs } of storage.jobs()) {
    // Folder names are job ids made safe for storage; ids Faultline makes are already safe.
    const state = await client.jobState(jobId);
    if (state.kind === 'open') {
      report.kept.push({ jobId, reason: 'the job is open' });
      continue;
    }
    const closedAt = state.kind === 'closed' ? state.closedAt : modifiedMs; // unknown to Temporal: judged by its newest write
    if (closedAt > cutoff) {
      report.kept.push({ jobId, reason: `closed ${new Date(closedAt).toISOString()}, within the retention period` });
      continue;
    }
    if (!dryRun) await storage.removeJob(jobId);
    report.removed.push({ jobId, bytes, ...(state.kind === 'closed' ? { closedAt: new Date(closedAt).toISOString() } : {}) });
    report.freedBytes += bytes;
  }
  return report;
}

export function parseAge(text: string): number {
  const parsed = DurationSchema.safeParse(text);
  if (!parsed.success) throw new FaultlineClientError('invalid', `--older-than wants a duration such as 7d, 12h or 0s, got "${text}"`);
  return parsed.data;
}
