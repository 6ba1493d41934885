/**
 * `faultline codec-server`: Temporal's remote codec protocol, so the Web UI (and `temporal`
 * CLI with --codec-endpoint) can show encrypted payloads to people who can reach this server.
 * POST /encode and /decode take and return `{ payloads: [{ metadata: {k: base64}, data: base64 }] }`.
 * CORS admits only the configured UI origins; an optional bearer token guards both routes.
 */
import { timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Payload, PayloadCodec } from '@temporalio/common';

interface JsonPayload {
  metadata?: Record<string, string> | null;
  data?: string | null;
}

const MAX_BODY_BYTES = 8 * 1024 * 1024;

function fromJson({ metadata, data }: JsonPayload): Payload {
  return {
    metadata: Object.fromEntries(Object.entries(metadata ?? {}).map(([key, value]) => [key, new Uint8Array(Buffer.from(value, 'base64'))])),
    data: new Uint8Array(Buffer.from(data ?? '', 'base64')),
  };
}

function toJson({ metadata, data }: Payload): JsonPayload {
  return {
    metadata: Object.fromEntries(Object.entries(metadata ?? {}).map(([key, value]) => [key, Buffer.from(value).toString('base64')])),
    data: Buffer.from(data ?? new Uint8Array()).toString('base64'),
  };
}

export interface CodecServerOptions {
  codec: PayloadCodec;
  port: number;
  host?: string;
  /** Origins allowed to call from a browser (the Web UI's), e.g. http://localhost:8233. */
  origins: readonly string[];
  /** When set, requests need `Authorization: Bearer <token>`. */
  token?: string;
  log?: (line: string) => void;
}

/** The origins a Web UI on `uiPort` is served from (the UI's own links use localhost). */
export function uiOrigins(uiPort: number): string[] {
  return [`http://localhost:${uiPort}`, `http://127.0.0.1:${uiPort}`];
}

export interface CodecServer {
  url: string;
  close(): Promise<void>;
}

function tokenMatches(header: string | undefined, token: string): boolean {
  const given = Buffer.from(header?.replace(/^Bearer\s+/i, '') ?? '');
  const wanted = Buffer.from(token);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}

export async function startCodecServer(options: CodecServerOptions): Promise<CodecServer> {
  const server = http.createServer((req, res) => {
    const origin = req.headers.origin;
    if (origin && options.origins.includes(origin)) {
      res.setHeader('access-control-allow-origin', origin);
      res.setHeader('vary', 'origin');
      res.setHeader('access-control-allow-credentials', 'true');
      res.setHeader('access-control-allow-headers', 'content-type, x-namespace, authorization');
      res.setHeader('access-control-allow-methods', 'POST, OPTIONS');
    }
    const fail = (status: number, message: string) => res.writeHead(status, { 'content-type': 'text/plain' }).end(message);
    if (req.method === 'OPTIONS') return void res.writeHead(204).end();
    const route = req.url?.split('?')[0];
    if (req.method !== 'POST' || (route !== '/encode' && route !== '/decode')) return void fail(404, 'POST /encode or /decode');
    if (options.token && !tokenMatches(req.headers.authorization, options.token)) return void fail(401, 'missing or wrong bearer token');
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        fail(413, 'body too large');
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on('end', () => {
      void (async () => {
        let payloads: Payload[];
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { payloads?: unknown };
          if (!Array.isArray(body.payloads)) throw new Error('payloads must be an array');
          payloads = (body.payloads as JsonPayload[]).map(fromJson);
        } catch (error) {
          return fail(400, `bad request: ${(error as Error).message}`);
        }
        try {
          const result = route === '/encode' ? await options.codec.encode(payloads) : await options.codec.decode(payloads);
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ payloads: result.map(toJson) }));
        } catch (error) {
          options.log?.(`codec ${route} failed: ${(error as Error).message}`);
          fail(422, (error as Error).message);
        }
      })();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${options.host ?? '127.0.0.1'}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
