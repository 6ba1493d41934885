/**
 * `faultline gc --older-than 7d`: removes the job storage (records, manifests, working copies) of
 * jobs that closed before the cut-off. An open job's storage is never touched; a directory whose
 * job Temporal no longer knows goes by its own age.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { createStorage, directoryBytes } from '../storage';
import { FaultlineClientError, type FaultlineClient } from '../client';
import { DurationSchema } from '../shared/duration';

export interface GcReport {
  olderThanMs: number;
  dryRun: boolean;
  removed: { jobId: string; bytes: number; closedAt?: string }[];
  kept: { jobId: string; reason: string }[];
  freedBytes: number;
}

export async function collectGarbage(client: FaultlineClient, storageRoot: string, olderThanMs: number, dryRun: boolean): Promise<GcReport> {
  const { jobsDir } = createStorage(storageRoot);
  const cutoff = Date.now() - olderThanMs;
  const report: GcReport = { olderThanMs, dryRun, removed: [], kept: [], freedBytes: 0 };
  let names: string[];
  try {
    names = (await readdir(jobsDir, { withFileTypes: true })).filter((entry) => entry.isDirectory()).map((entry) => entry.name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return report;
    throw error;
  }
  for (const name of names.sort()) {
    const dir = path.join(jobsDir, name);
    // Directory names are job ids made safe for a file system; ids Faultline makes are already safe.
    const state = await client.jobState(name);
    let closedAt: number | undefined;
    if (state.kind === 'open') {
      report.kept.push({ jobId: name, reason: 'the job is open' });
      continue;
    }
    if (state.kind === 'closed') closedAt = state.closedAt;
    else closedAt = (await stat(dir)).mtimeMs; // unknown to Temporal: judged by the directory's age
    if (closedAt > cutoff) {
      report.kept.push({ jobId: name, reason: `closed ${new Date(closedAt).toISOString()}, within the retention period` });
      continue;
    }
    const bytes = await directoryBytes(dir);
    if (!dryRun) await rm(dir, { recursive: true, force: true });
    report.removed.push({ jobId: name, bytes, ...(state.kind === 'closed' ? { closedAt: new Date(closedAt).toISOString() } : {}) });
    report.freedBytes += bytes;
  }
  return report;
}

export function parseAge(text: string): number {
  const parsed = DurationSchema.safeParse(text);
  if (!parsed.success) throw new FaultlineClientError('invalid', `--older-than wants a duration such as 7d, 12h or 0s, got "${text}"`);
  return parsed.data;
}
