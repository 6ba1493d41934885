/**
 * Every task a job schedules carries the job's priority and fairness key (its tenant and weight),
 * given when the job started: its batches and slices are ordered against other jobs' in the task
 * queue, where Temporal's priority and fairness apply.
 */
import { type ActivityInterfaceFor, type ActivityOptions, proxyActivities, workflowInfo } from '@temporalio/workflow';

/** A priority key set while the workflow runs (`set --priority`): the job's prepared options, a slice's control. */
let currentKey: () => number | undefined = () => undefined;

export function usePriorityKey(key: () => number | undefined): void {
  currentKey = key;
}

/** The job's priority (with a key set since it started), or nothing (older jobs, started without one). */
export function jobPriority(): Pick<ActivityOptions, 'priority'> {
  const started = workflowInfo().priority;
  const key = currentKey();
  if (key !== undefined) return { priority: { ...started, priorityKey: key } };
  return started && (started.priorityKey !== undefined || started.fairnessKey !== undefined) ? { priority: started } : {};
}

/** Like `proxyActivities`, with the running workflow's priority added at each call. */
export function prioritizedActivities<A extends object>(options: ActivityOptions): ActivityInterfaceFor<A> {
  return new Proxy({} as ActivityInterfaceFor<A>, {
    get(_target, name) {
      if (typeof name !== 'string') return undefined;
      return (proxyActivities<A>({ ...options, ...jobPriority() }) as Record<string, unknown>)[name];
    },
  });
}
