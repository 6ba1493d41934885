/**
 * The record of a flag set on a job that has already closed (a closed execution cannot change its
 * search attributes): a workflow `<jobId>/flag-N`, started by the client with `FaultlineFlagged =
 * true`, the flag in its memo and the reason as its summary, that completes at once. The client
 * merges these flags into the job's result and `list`.
 */
import type { Flag, FlagRecordInput } from '../shared';

export function flagWorkflow(input: FlagRecordInput): Promise<Flag> {
  return Promise.resolve({ ...(input.item ? { item: input.item } : {}), reason: input.reason, at: input.at });
}
