/**
 * Patch decisions. A workflow started by this code takes every patch of PATCH_BASELINE_1 at once,
 * with one marker, where it recorded one marker and one TemporalChangeVersion upsert per patch
 * (a one-item job: 12 events, was 26; ~5 ms of its latency). Workflows recorded before
 * have no such marker: each patch is still asked on its own, where it always was.
 */
import { patched as patchedInHistory } from '@temporalio/workflow';
import { PATCHES, PATCH_BASELINE_1 } from '../shared';

const IN_BASELINE_1 = new Set(PATCH_BASELINE_1);

/** Module state is per workflow (the SDK gives each workflow its own modules); set once, at the workflow's start. */
let baseline1 = false;

/** The first decision of a job or slice workflow, before any other patch is asked. */
export function decidePatchBaseline(): void {
  baseline1 = patchedInHistory(PATCHES.baseline1);
}

/** `patched()` of the SDK, answered by the baseline for the patches it stands for. */
export function patched(patchId: string): boolean {
  return (baseline1 && IN_BASELINE_1.has(patchId)) || patchedInHistory(patchId);
}
