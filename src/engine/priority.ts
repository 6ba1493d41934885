/**
 * Every task a job schedules carries the job's priority and fairness key (its tenant and weight),
 * given when the job started: its batches and slices are ordered against other jobs' in the task
 * queue, where Temporal's priority and fairness apply.
 */
import { type ActivityInterfaceFor, type ActivityOptions, proxyActivities, workflowInfo } from '@temporalio/workflow';

/** The job's priority, or nothing (older jobs, started without one). */
export function jobPriority(): Pick<ActivityOptions, 'priority'> {
  const priority = workflowInfo().priority;
  return priority && (priority.priorityKey !== undefined || priority.fairnessKey !== undefined) ? { priority } : {};
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
