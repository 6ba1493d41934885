/** Errors the client API and the CLI report, each with its CONTRACT exit code. */
export const ClientErrorCodes = {
  invalid: 'invalid',
  conflict: 'conflict',
  rejected: 'rejected',
  unreachable: 'unreachable',
  notFound: 'not_found',
  /** The job failed before it had a result (e.g. PipelineUnavailable); the cause holds Temporal's failure. */
  failed: 'failed',
} as const;
export type ClientErrorCode = (typeof ClientErrorCodes)[keyof typeof ClientErrorCodes];

export const EXIT_CODES: Record<ClientErrorCode, number> = { invalid: 2, conflict: 2, rejected: 2, unreachable: 4, not_found: 5, failed: 1 };
