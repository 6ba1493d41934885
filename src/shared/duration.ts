import ms from 'ms';
import { z } from 'zod';

/** Durations in specs are strings such as "100ms", "0s", "10m", "24h". */
export const DurationSchema = z.string().transform((raw, ctx) => {
  const value = /^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*$/i.test(raw) ? ms(raw.trim() as ms.StringValue) : undefined;
  if (value === undefined || !Number.isFinite(value) || value < 0) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${raw}" is not a duration such as "500ms", "10s", "5m", "1h" or "1d"` });
    return z.NEVER;
  }
  return value;
});
