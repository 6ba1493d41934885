/**
 * Payload encryption: with FAULTLINE_PAYLOAD_KEY set, every payload Faultline's clients and
 * workers hand to Temporal (job inputs, results, activity arguments and results, heartbeats,
 * memo, failure details, summaries) is AES-256-GCM ciphertext; the Temporal server and anyone
 * with Web UI access see only `binary/encrypted`. The key id travels in the payload metadata, so
 * keys can rotate: new payloads use the current key, FAULTLINE_PAYLOAD_KEYS_OLD decrypt old ones.
 * `faultline codec-server` lets the Web UI decode them for people who hold the key.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { METADATA_ENCODING_KEY, type Payload, type PayloadCodec, ValueError } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { ENV } from './shared/constants';

export const ENCRYPTED_ENCODING = 'binary/encrypted';
export const KEY_ID_METADATA = 'encryption-key-id';
const CIPHER_METADATA = 'encryption-cipher';
const CIPHER = 'AES/GCM/NoPadding';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

export class PayloadKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PayloadKeyError';
  }
}

/** A 32-byte key from 64 hex digits or base64. */
export function parsePayloadKey(text: string, name: string): Buffer {
  const trimmed = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(trimmed) ? Buffer.from(trimmed, 'hex') : Buffer.from(trimmed, 'base64');
  if (key.length !== 32) throw new PayloadKeyError(`${name} must be 32 bytes (64 hex digits or base64), got ${key.length} bytes; make one with: openssl rand -hex 32`);
  return key;
}

/** The key's public name in payload metadata: derived, so every process names the same key alike without configuring ids. */
export function payloadKeyId(key: Buffer): string {
  return `fl-${createHash('sha256').update('faultline-payload-key-id').update(key).digest('hex').slice(0, 16)}`;
}

const utf8 = (text: string) => new Uint8Array(Buffer.from(text, 'utf8'));
const text = (bytes: Uint8Array | null | undefined) => (bytes ? Buffer.from(bytes).toString('utf8') : undefined);

export class EncryptionCodec implements PayloadCodec {
  private readonly keys = new Map<string, Buffer>();
  readonly currentKeyId: string;

  constructor(current: Buffer, old: readonly Buffer[] = []) {
    this.currentKeyId = payloadKeyId(current);
    this.keys.set(this.currentKeyId, current);
    for (const key of old) this.keys.set(payloadKeyId(key), key);
  }

  async encode(payloads: Payload[]): Promise<Payload[]> {
    const key = this.keys.get(this.currentKeyId) as Buffer;
    return payloads.map((payload) => {
      const nonce = randomBytes(NONCE_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, nonce);
      const plain = temporal.api.common.v1.Payload.encode(payload).finish();
      const data = Buffer.concat([nonce, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
      return {
        metadata: { [METADATA_ENCODING_KEY]: utf8(ENCRYPTED_ENCODING), [CIPHER_METADATA]: utf8(CIPHER), [KEY_ID_METADATA]: utf8(this.currentKeyId) },
        data: new Uint8Array(data),
      };
    });
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((payload) => {
      if (text(payload.metadata?.[METADATA_ENCODING_KEY]) !== ENCRYPTED_ENCODING) return payload; // written before encryption was on
      const keyId = text(payload.metadata?.[KEY_ID_METADATA]);
      const key = keyId ? this.keys.get(keyId) : undefined;
      if (!key) throw new ValueError(`payload encrypted with key ${keyId ?? '(none)'}, which this process does not hold; add it to ${ENV.payloadKeysOld}`);
      const data = Buffer.from(payload.data ?? new Uint8Array());
      if (data.length < NONCE_BYTES + TAG_BYTES) throw new ValueError('encrypted payload is truncated');
      const decipher = createDecipheriv('aes-256-gcm', key, data.subarray(0, NONCE_BYTES));
      decipher.setAuthTag(data.subarray(data.length - TAG_BYTES));
      let plain: Buffer;
      try {
        plain = Buffer.concat([decipher.update(data.subarray(NONCE_BYTES, data.length - TAG_BYTES)), decipher.final()]);
      } catch {
        throw new ValueError(`encrypted payload failed authentication under key ${keyId} (tampered, or a different key with the same id)`);
      }
      return temporal.api.common.v1.Payload.decode(plain) as Payload;
    });
  }
}

/** The codec configured by the environment, or undefined when payloads stay plain. */
export function codecFromConfig(config: { payloadKey?: string; payloadKeysOld?: string }): EncryptionCodec | undefined {
  if (!config.payloadKey) {
    if (config.payloadKeysOld) throw new PayloadKeyError(`${ENV.payloadKeysOld} is set without ${ENV.payloadKey}`);
    return undefined;
  }
  const old = (config.payloadKeysOld ?? '')
    .split(',')
    .map((entry) => entry.trim())
    .filter(Boolean)
    .map((entry, index) => parsePayloadKey(entry, `${ENV.payloadKeysOld}[${index}]`));
  return new EncryptionCodec(parsePayloadKey(config.payloadKey, ENV.payloadKey), old);
}

/** Data converter options for clients and workers: the codec when a key is set. */
export function dataConverterFor(config: { payloadKey?: string; payloadKeysOld?: string }): { payloadCodecs: PayloadCodec[] } | undefined {
  const codec = codecFromConfig(config);
  return codec ? { payloadCodecs: [codec] } : undefined;
}
