/** Keeps credentials and query tokens out of reports and logs. Pure, so workflows may use it too. */
const URL_IN_TEXT = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s"'<>]+)/gi;
const SENSITIVE_KEY = /secret|token|password|passwd|authorization|api[-_]?key|signature|credential|sig$|^key$/i;

export function redactUrl(raw: string): string {
  try {
    const url = new URL(raw);
    if (url.username || url.password) {
      url.username = url.username ? 'REDACTED' : '';
      url.password = url.password ? 'REDACTED' : '';
    }
    // Path segments that look like secrets (webhook tokens, signed keys) are masked too.
    const segments = url.pathname.split('/');
    if (segments.some(looksLikeToken)) url.pathname = segments.map((segment) => (looksLikeToken(segment) ? 'REDACTED' : segment)).join('/');
    if (url.search) {
      const names = [...new Set([...url.searchParams.keys()])];
      const params = names.map((name) => `${encodeURIComponent(name)}=REDACTED`);
      url.search = `?${params.join('&')}`;
    }
    return url.toString();
  } catch {
    return raw;
  }
}

/** Long runs of token characters (not file names): ≥ 20 characters, or ≥ 16 with a digit. */
function looksLikeToken(segment: string): boolean {
  if (!/^[A-Za-z0-9_\-~%+=.]+$/.test(segment) || /\.[A-Za-z0-9]{2,5}$/.test(segment)) return false;
  return segment.length >= 20 || (segment.length >= 16 && /\d/.test(segment) && /[A-Za-z]/.test(segment));
}

export function redactText(text: string): string {
  return text.replace(URL_IN_TEXT, (match) => redactUrl(match));
}

/** Deep copy with URLs redacted and sensitive keys blanked. */
export function redactValue(value: unknown, depth = 0): unknown {
  if (depth > 12) return '[depth limit]';
  if (typeof value === 'string') return redactText(value);
  if (Array.isArray(value)) return value.map((entry) => redactValue(entry, depth + 1));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, entry] of Object.entries(value as Record<string, unknown>)) {
      out[key] = SENSITIVE_KEY.test(key) && key !== 'stack' ? '[REDACTED]' : redactValue(entry, depth + 1);
    }
    return out;
  }
  return value;
}

/**
 * How a webhook URL is shown anywhere (results, logs, progress, pages): its origin and a short
 * fingerprint. Slack, Discord and Teams carry the secret in the path, so no part of it is shown.
 */
export function webhookDisplay(raw: string): string {
  let origin: string;
  try {
    origin = new URL(raw).origin;
  } catch {
    origin = 'invalid-url';
  }
  return `${origin}/… (webhook ${fingerprint(raw)})`;
}

/** FNV-1a (64-bit, as two 32-bit halves): a stable short id for a secret, not a way to recover it. */
export function fingerprint(text: string): string {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ text.length;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    a = Math.imul(a ^ code, 0x01000193) >>> 0;
    b = Math.imul(b ^ (code + i), 0x01000193) >>> 0;
  }
  return `${a.toString(16).padStart(8, '0')}${b.toString(16).padStart(8, '0')}`.slice(0, 12);
}
