/**
 * Loaded once per workflow thread, before any workflow, and shared by every workflow in it (the
 * bundle's `preloadModules`). Without it each new workflow evaluates the shared definitions again
 * (several hundred zod schemas): about 7 ms of CPU per workflow, most of a one-item job's cost.
 *
 * The SDK deep-freezes what it preloads, so nothing here may keep per-workflow state (src/shared
 * keeps none). Two things zod writes while parsing would then throw, so they are dealt with now,
 * before the freeze: an object schema's lazily built key cache (filled), and the `lastIndex` of a
 * string schema's pattern, which zod resets before each test (each read now gets a fresh RegExp).
 */
import { ZodLazy, ZodObject, ZodString, ZodType } from 'zod';
import * as shared from '../shared';

/** Makes every schema reachable from `value` safe to parse once deep-frozen. */
export function fillSchemaCaches(value: unknown, seen = new Set<unknown>()): void {
  if (!(value instanceof ZodType) || seen.has(value)) return;
  seen.add(value);
  const visit = (child: unknown) => {
    if (child instanceof ZodType) fillSchemaCaches(child, seen);
    else if (Array.isArray(child)) for (const entry of child) fillSchemaCaches(entry, seen);
    else if (child instanceof Map) for (const entry of child.values()) fillSchemaCaches(entry, seen);
  };
  if (value instanceof ZodObject) {
    // `_getCached` is zod's own cache filler (zod 3), called as a parse would.
    (value as unknown as { _getCached(): unknown })._getCached();
    for (const field of Object.values(value.shape as Record<string, unknown>)) visit(field);
  }
  if (value instanceof ZodString)
    for (const check of value._def.checks) {
      if (check.kind !== 'regex') continue;
      const { source, flags } = check.regex;
      Object.defineProperty(check, 'regex', { get: () => new RegExp(source, flags), enumerable: true });
    }
  // A lazy schema may return a schema kept at module scope (frozen with the rest).
  if (value instanceof ZodLazy) visit(value.schema);
  for (const part of Object.values(value._def as Record<string, unknown>)) visit(part);
}

for (const exported of Object.values(shared)) fillSchemaCaches(exported);
