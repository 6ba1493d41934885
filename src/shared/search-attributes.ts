import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/** Typed keys for the search attributes registered by `faultline dev`, the tests and compose. */
export const SearchKeys = {
  status: defineSearchAttributeKey('FaultlineStatus', SearchAttributeType.KEYWORD),
  hasErrors: defineSearchAttributeKey('FaultlineHasErrors', SearchAttributeType.BOOL),
  failedCount: defineSearchAttributeKey('FaultlineFailedCount', SearchAttributeType.INT),
  pipeline: defineSearchAttributeKey('FaultlinePipeline', SearchAttributeType.KEYWORD),
  flagged: defineSearchAttributeKey('FaultlineFlagged', SearchAttributeType.BOOL),
  tenant: defineSearchAttributeKey('FaultlineTenant', SearchAttributeType.KEYWORD),
  priority: defineSearchAttributeKey('FaultlinePriority', SearchAttributeType.INT),
} as const;
