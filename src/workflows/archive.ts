/** Archive child job: packs the job's Available outputs and a manifest into a tar.gz. */
import { proxyActivities } from '@temporalio/workflow';
import type { ArchiveInput, ArchiveSummary, createArchiveActivities } from '../activities/archive';
import { nonRetryableErrorTypes } from '../shared';

const { packArchive } = proxyActivities<ReturnType<typeof createArchiveActivities>>({
  startToCloseTimeout: '30m',
  heartbeatTimeout: '2m',
  retry: { maximumAttempts: 3, initialInterval: '2s', nonRetryableErrorTypes },
});

export async function archiveWorkflow(input: ArchiveInput): Promise<ArchiveSummary> {
  return packArchive(input);
}
