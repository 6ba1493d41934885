/**
 * Webhook secrets never travel in clear through workflow history: clients encrypt them with a
 * key shared by clients and workers (AES-256-GCM), or name a worker-side secret (`env:NAME`).
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const PREFIX = 'v1';

export function parseKey(raw: string): Buffer {
  const key = Buffer.from(raw.trim(), /^[0-9a-f]{64}$/i.test(raw.trim()) ? 'hex' : 'base64');
  if (key.length !== 32) throw new Error('FAULTLINE_SECRET_KEY must be 32 bytes, hex (64 chars) or base64');
  return key;
}

/** The key from FAULTLINE_SECRET_KEY, else from `<storage>/secret.key`, created when `create` is set. */
export function loadSecretKey(envValue: string | undefined, storageRoot: string, create: boolean): Buffer | undefined {
  if (envValue) return parseKey(envValue);
  const file = path.join(storageRoot, 'secret.key');
  if (existsSync(file)) return parseKey(readFileSync(file, 'utf8'));
  if (!create) return undefined;
  mkdirSync(storageRoot, { recursive: true });
  const key = randomBytes(32);
  writeFileSync(file, key.toString('hex'), { mode: 0o600, flag: 'wx' });
  return key;
}

export function encryptSecret(secret: string, key: Buffer): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  const body = Buffer.concat([cipher.update(secret, 'utf8'), cipher.final()]);
  return [PREFIX, iv.toString('base64'), cipher.getAuthTag().toString('base64'), body.toString('base64')].join(':');
}

export function decryptSecret(sealed: string, key: Buffer): string {
  const [prefix, iv, tag, body] = sealed.split(':');
  if (prefix !== PREFIX || !iv || !tag || !body) throw new Error('not an encrypted Faultline secret');
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64'));
  decipher.setAuthTag(Buffer.from(tag, 'base64'));
  return Buffer.concat([decipher.update(Buffer.from(body, 'base64')), decipher.final()]).toString('utf8');
}

export const SIGNATURE_HEADER = 'Faultline-Signature';

export function signWebhook(rawBody: string, secret: string, unixSeconds: number): string {
  const mac = createHmac('sha256', secret).update(`${unixSeconds}.${rawBody}`).digest('hex');
  return `t=${unixSeconds},v1=${mac}`;
}

/**
 * Checks a `Faultline-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + rawBody)>`.
 * Rejects signatures older (or newer) than `toleranceSec`.
 */
export function verifyWebhookSignature(rawBody: string | Buffer, header: string | undefined, secret: string, toleranceSec = 300, nowSec = Math.floor(Date.now() / 1000)): boolean {
  if (!header) return false;
  const parts = new Map(header.split(',').map((part) => part.trim().split('=') as [string, string]));
  const t = Number(parts.get('t'));
  const v1 = parts.get('v1');
  if (!Number.isInteger(t) || !v1 || !/^[0-9a-f]{64}$/.test(v1)) return false;
  if (Math.abs(nowSec - t) > toleranceSec) return false;
  const expected = createHmac('sha256', secret).update(`${t}.`).update(rawBody).digest();
  return timingSafeEqual(expected, Buffer.from(v1, 'hex'));
}
