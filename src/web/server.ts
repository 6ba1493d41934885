/**
 * `faultline web`: a server-rendered web app over the same FaultlineClient the CLI uses — the
 * jobs list, a job's page (counts, progress, failures by type, item browser, an item's report)
 * and its actions. Safe by default: loopback only unless a token is set; actions are POSTs that
 * carry a CSRF token and are confirmed first; payloads are decoded here, never in the browser.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FaultlineClient, ListFilter } from '../client';
import type { Config } from '../config';
import { FaultlineClientError } from '../client';
import type { JobResult, LimitsRequest, OutputRecord, RetryRequest } from '../shared';
import { SCRIPT, STYLESHEET } from './assets';
import { type ItemPage, type ListParams, type PageContext, PAGE_SIZE, confirmPage, itemPage, jobPage, jobRows, jobsPage, liveState, loginPage, messagePage, outcomePage } from './pages';

export interface WebServerOptions {
  client: FaultlineClient;
  namespace: string;
  host?: string;
  port: number;
  /** Required to bind beyond loopback: browsers sign in with it, scripts send `Authorization: Bearer`. */
  token?: string;
  temporalUi?: string;
  log?: (line: string) => void;
}

/** 8233 is the Temporal Web UI's port in `faultline dev`. */
export const WEB_DEFAULT_PORT = 8234;

/** The web app with the configuration's token and Temporal Web UI link. */
export function startWebFor(client: FaultlineClient, config: Config, where: { port: number; host?: string; temporalUi?: string }, log?: (line: string) => void): Promise<WebServer> {
  const temporalUi = where.temporalUi ?? config.temporalUi;
  return startWebServer({
    client,
    namespace: config.namespace,
    port: where.port,
    ...(where.host ? { host: where.host } : {}),
    ...(config.webToken ? { token: config.webToken } : {}),
    ...(temporalUi ? { temporalUi } : {}),
    ...(log ? { log } : {}),
  });
}

export interface WebServer {
  url: string;
  close(): Promise<void>;
}

/** The web app will not listen (no token beyond loopback, a busy port): one line, the CLI's exit 2. */
export class WebRefused extends Error {
  override name = 'WebRefused';
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);
const MAX_FORM_BYTES = 64 * 1024;
const CSRF_COOKIE = 'faultline_csrf';
const SESSION_COOKIE = 'faultline_session';

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  // same-origin, not no-referrer: with no-referrer, browsers send `Origin: null` on form posts.
  'referrer-policy': 'same-origin',
  'cache-control': 'no-store',
};

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function cookies(request: http.IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (request.headers.cookie ?? '').split(';')) {
    const at = part.indexOf('=');
    if (at > 0) out[part.slice(0, at).trim()] = decodeURIComponent(part.slice(at + 1).trim());
  }
  return out;
}

function same(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

async function readForm(request: http.IncomingMessage): Promise<URLSearchParams> {
  const type = request.headers['content-type'] ?? '';
  if (!type.startsWith('application/x-www-form-urlencoded')) throw new HttpError(415, 'actions are form posts (application/x-www-form-urlencoded)');
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) throw new HttpError(413, 'form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/** The records of one page of the item browser, streamed from the job's records (never all in memory). */
export async function itemsPage(client: FaultlineClient, result: JobResult, filter: { status?: string; type?: string }, page: number): Promise<ItemPage> {
  const skip = (page - 1) * PAGE_SIZE;
  const records: OutputRecord[] = [];
  let matched = 0;
  let hasNext = false;
  // Manifest lines without the filter's text are not parsed (a 100,000-record manifest is read in well under a second).
  const contains = filter.type ? `"type":${JSON.stringify(filter.type)}` : filter.status ? `"status":${JSON.stringify(filter.status)}` : undefined;
  for await (const record of client.outputRecords(result, contains ? { contains } : {})) {
    if (filter.status && record.status !== filter.status) continue;
    if (filter.type && record.error?.type !== filter.type) continue;
    if (matched++ < skip) continue;
    if (records.length === PAGE_SIZE) {
      hasNext = true;
      break;
    }
    records.push(record);
  }
  return { records, page, hasNext, ...(filter.status ? { status: filter.status } : {}), ...(filter.type ? { type: filter.type } : {}) };
}

async function recordsOfItem(client: FaultlineClient, result: JobResult, item: string): Promise<OutputRecord[]> {
  const records: OutputRecord[] = [];
  for await (const record of client.outputRecords(result, { contains: `"item":${JSON.stringify(item)}` })) if (record.item === item) records.push(record);
  return records;
}

function listParams(search: URLSearchParams): ListParams {
  const get = (name: string) => search.get(name)?.trim() || undefined;
  const status = get('status');
  const pipeline = get('pipeline');
  const tenant = get('tenant');
  const q = get('q');
  return {
    ...(status ? { status } : {}),
    ...(pipeline ? { pipeline } : {}),
    ...(tenant ? { tenant } : {}),
    ...(q ? { q } : {}),
    ...(search.get('hasErrors') === 'true' ? { hasErrors: true } : {}),
    ...(search.get('flagged') === 'true' ? { flagged: true } : {}),
  };
}

async function listJobs(client: FaultlineClient, params: ListParams) {
  const filter: ListFilter = { limit: 200 };
  // "Running" and "Paused" are what FaultlineStatus says of open jobs.
  if (params.status) filter.status = params.status;
  if (params.pipeline) filter.pipeline = params.pipeline;
  if (params.tenant) filter.tenant = params.tenant;
  if (params.hasErrors) filter.hasErrors = true;
  if (params.flagged) filter.flagged = true;
  const jobs = await client.list(filter);
  return params.q ? jobs.filter((job) => job.jobId.includes(params.q ?? '')) : jobs;
}

function positiveInt(value: string | null, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new HttpError(400, `${name} must be a whole number from ${min} to ${max}`);
  return n;
}

export async function startWebServer(options: WebServerOptions): Promise<WebServer> {
  const host = options.host ?? '127.0.0.1';
  if (!LOOPBACK.has(host) && !options.token) throw new WebRefused(`faultline web binds to ${host}, beyond this machine, only with FAULTLINE_WEB_TOKEN set (or use --host 127.0.0.1)`);
  const { client } = options;
  // Sessions and CSRF tokens are signed with a key of this process: a restart signs everyone out.
  const key = randomBytes(32);
  const sign = (value: string) => createHmac('sha256', key).update(value).digest('base64url');
  const sessionValue = options.token ? sign(`session:${options.token}`) : '';

  const handle = async (request: http.IncomingMessage, response: http.ServerResponse): Promise<void> => {
    const url = new URL(request.url ?? '/', 'http://faultline.local');
    const segments = url.pathname
      .split('/')
      .slice(1)
      .map((segment) => decodeURIComponent(segment));
    const jar = cookies(request);
    const setCookies: string[] = [];
    let csrf = jar[CSRF_COOKIE];
    if (!csrf || !/^[A-Za-z0-9_-]{20,64}$/.test(csrf)) {
      csrf = randomBytes(24).toString('base64url');
      setCookies.push(`${CSRF_COOKIE}=${csrf}; Path=/; HttpOnly; SameSite=Strict`);
    }
    const context: PageContext = { csrf, namespace: options.namespace, ...(options.temporalUi ? { temporalUi: options.temporalUi } : {}) };
    const send = (status: number, type: string, body: string | Buffer, headers: Record<string, string> = {}) => {
      response.writeHead(status, { ...SECURITY_HEADERS, 'content-type': type, ...(setCookies.length > 0 ? { 'set-cookie': setCookies } : {}), ...headers });
      response.end(body);
    };
    const page = (status: number, body: string) => send(status, 'text/html; charset=utf-8', body);
    const json = (status: number, body: unknown) => send(status, 'application/json; charset=utf-8', JSON.stringify(body));
    const redirect = (location: string) => send(303, 'text/plain; charset=utf-8', '', { location });
    const wantsJson = segments[0] === 'api' || (request.headers.accept ?? '').startsWith('application/json');

    if (request.method === 'GET' && segments[0] === 'static') {
      if (segments[1] === 'app.css') return send(200, 'text/css; charset=utf-8', STYLESHEET);
      if (segments[1] === 'app.js') return send(200, 'text/javascript; charset=utf-8', SCRIPT);
      throw new HttpError(404, 'not found');
    }
    if (request.method === 'GET' && url.pathname === '/favicon.ico') return send(204, 'image/x-icon', '');
    if (request.method === 'GET' && url.pathname === '/healthz') return send(200, 'text/plain; charset=utf-8', 'ok\n');

    // POSTs: same origin only (Origin / Sec-Fetch-Site), and the form's CSRF token must match its cookie.
    let form: URLSearchParams | undefined;
    if (request.method === 'POST') {
      const origin = request.headers.origin;
      if (origin !== undefined && origin !== `http://${request.headers.host ?? ''}` && origin !== `https://${request.headers.host ?? ''}`) throw new HttpError(403, 'cross-origin form refused');
      if (request.headers['sec-fetch-site'] && !['same-origin', 'none'].includes(String(request.headers['sec-fetch-site']))) throw new HttpError(403, 'cross-site form refused');
      form = await readForm(request);
      const given = form.get('csrf') ?? '';
      if (!jar[CSRF_COOKIE] || !same(given, jar[CSRF_COOKIE])) throw new HttpError(403, 'the form has expired (CSRF check failed): reload the page and try again');
    } else if (request.method !== 'GET' && request.method !== 'HEAD') {
      throw new HttpError(405, 'method not allowed');
    }

    if (options.token) {
      if (url.pathname === '/login') {
        if (request.method === 'POST' && form) {
          if (same(form.get('token') ?? '', options.token)) {
            setCookies.push(`${SESSION_COOKIE}=${sessionValue}; Path=/; HttpOnly; SameSite=Strict`);
            return redirect('/');
          }
          return page(401, loginPage(context, true));
        }
        return page(200, loginPage(context, false));
      }
      const bearer = request.headers.authorization?.replace(/^Bearer\s+/i, '') ?? '';
      const signedIn = same(jar[SESSION_COOKIE] ?? '', sessionValue) || same(bearer, options.token);
      if (!signedIn) {
        if (wantsJson || request.method !== 'GET') return json(401, { error: 'sign in first (FAULTLINE_WEB_TOKEN)' });
        return redirect('/login');
      }
    }

    if (request.method === 'GET' && url.pathname === '/') {
      const params = listParams(url.searchParams);
      return page(200, jobsPage(await listJobs(client, params), params, context));
    }
    if (request.method === 'GET' && url.pathname === '/fragments/jobs') return page(200, jobRows(await listJobs(client, listParams(url.searchParams)), context).text);
    if (request.method === 'GET' && url.pathname === '/api/jobs') return json(200, await listJobs(client, listParams(url.searchParams)));
    if (request.method === 'GET' && segments[0] === 'api' && segments[1] === 'jobs' && segments[2] && segments.length === 3) {
      return json(200, liveState(await client.snapshot(segments[2])));
    }

    if (segments[0] !== 'jobs' || !segments[1]) throw new HttpError(404, 'not found');
    const jobId = segments[1];
    if (request.method === 'GET' && segments.length === 2) {
      const snapshot = await client.snapshot(jobId);
      const spec = await client.specHead(jobId).catch(() => undefined);
      const status = url.searchParams.get('status') || undefined;
      const type = url.searchParams.get('type') || undefined;
      const pageNumber = positiveInt(url.searchParams.get('page'), 'page', 1, 1_000_000) ?? 1;
      const items = snapshot.result ? await itemsPage(client, snapshot.result, { ...(status ? { status } : {}), ...(type ? { type } : {}) }, pageNumber) : undefined;
      return page(200, jobPage(snapshot, spec, items, context));
    }
    if (request.method === 'GET' && segments[2] === 'result.json' && segments.length === 3) {
      const snapshot = await client.snapshot(jobId);
      if (!snapshot.result) throw new HttpError(404, `job ${jobId} has no settled round yet`);
      return json(200, snapshot.result);
    }
    if (request.method === 'GET' && segments[2] === 'items' && segments[3] && segments.length === 4) {
      const snapshot = await client.snapshot(jobId);
      if (!snapshot.result) throw new HttpError(404, `job ${jobId} has no settled round yet`);
      return page(200, itemPage(jobId, segments[3], await recordsOfItem(client, snapshot.result, segments[3]), snapshot.result, context, snapshot.open));
    }
    if (request.method === 'POST' && form && segments[2] === 'actions' && segments[3] && segments.length === 4) {
      return page(...(await runAction(client, jobId, segments[3], form, context)));
    }
    throw new HttpError(404, 'not found');
  };

  const server = http.createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      const status =
        error instanceof HttpError ? error.status : error instanceof FaultlineClientError ? (({ not_found: 404, invalid: 400, rejected: 409 } as Record<string, number>)[error.code] ?? 502) : 500;
      const message = error instanceof Error ? error.message : String(error);
      if (status >= 500) options.log?.(`faultline web: ${request.method} ${request.url}: ${message}`);
      if (response.headersSent) return response.end();
      const context: PageContext = { csrf: '', namespace: options.namespace, ...(options.temporalUi ? { temporalUi: options.temporalUi } : {}) };
      const asJson = (request.url ?? '').startsWith('/api/') || (request.headers.accept ?? '').startsWith('application/json');
      response.writeHead(status, { ...SECURITY_HEADERS, 'content-type': asJson ? 'application/json; charset=utf-8' : 'text/html; charset=utf-8' });
      response.end(asJson ? JSON.stringify({ error: message }) : messagePage(status === 404 ? 'Not found' : 'Something went wrong', message, context));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'EADDRINUSE' ? new WebRefused(`port ${options.port} is already in use; pick another --port`, { cause: error }) : error),
    );
    server.listen(options.port, host, () => {
      server.removeAllListeners('error');
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${shown}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

type Answer = [number, string];

/** One action from the job page: the first post asks for confirmation, the confirmed one runs it through the client. */
async function runAction(client: FaultlineClient, jobId: string, action: string, form: URLSearchParams, context: PageContext): Promise<Answer> {
  const confirmed = form.get('confirmed') === 'yes';
  const field = (name: string) => form.get(name)?.trim() || undefined;
  const ask = (question: string, fields: Record<string, string> = {}): Answer => [200, confirmPage(jobId, action, question, fields, context)];
  const done = (title: string, message: string): Answer => [200, outcomePage(jobId, title, message, true, context)];
  try {
    switch (action) {
      case 'retry': {
        const type = field('type');
        const item = field('item');
        const request: RetryRequest = type ? { types: [type] } : item ? { items: [item] } : {};
        const what = type ? `the items that failed with ${type}` : item ? `item ${item}` : 'all failed items';
        if (!confirmed) return ask(`Retry ${what} of ${jobId}? They run again in a new round of the same job.`, { ...(type ? { type } : {}), ...(item ? { item } : {}) });
        const answer = await client.retry(jobId, request);
        return done(
          'Retry queued',
          answer.followUp ? `${answer.queuedCount} item(s) run again in follow-up job ${answer.jobId}.` : `${answer.queuedCount} item(s) queued for round ${answer.round} of ${jobId}.`,
        );
      }
      case 'cancel': {
        if (!confirmed) return ask(`Cancel ${jobId}? Work not yet finished ends Cancelled; the result says so.`);
        const answer = await client.cancel(jobId, 'cancelled from faultline web');
        return done('Cancel requested', `Cancel accepted (${JSON.stringify(answer)}).`);
      }
      case 'pause':
      case 'resume': {
        if (!confirmed) return ask(action === 'pause' ? `Pause ${jobId}? In-flight work finishes; nothing new starts until you resume.` : `Resume ${jobId}?`);
        const answer = action === 'pause' ? await client.pause(jobId) : await client.resume(jobId);
        return done(action === 'pause' ? 'Paused' : 'Resumed', `${jobId} is ${answer.paused ? 'paused' : 'running'} (phase ${answer.phase}).`);
      }
      case 'limits': {
        const request: LimitsRequest = {};
        const concurrency = positiveInt(form.get('concurrency'), 'concurrency', 1, 10_000);
        const count = positiveInt(form.get('toleratedFailureCount'), 'tolerated failures (count)', 0);
        const percent = positiveInt(form.get('toleratedFailurePercent'), 'tolerated failures (%)', 0, 100);
        const priority = positiveInt(form.get('priority'), 'priority', 1, 5);
        if (priority !== undefined) request.priority = priority;
        if (concurrency !== undefined) request.concurrency = concurrency;
        if (count !== undefined) request.toleratedFailureCount = count;
        if (percent !== undefined) request.toleratedFailurePercent = percent;
        if (Object.keys(request).length === 0) throw new HttpError(400, 'give a concurrency, a tolerated-failure limit or a priority');
        const fields = Object.fromEntries(Object.entries(request).map(([name, value]) => [name, String(value)]));
        if (!confirmed)
          return ask(
            `Change the limits of ${jobId} to ${Object.entries(fields)
              .map(([name, value]) => `${name} ${value}`)
              .join(', ')}? Work not yet started takes them.`,
            fields,
          );
        const limits = await client.setLimits(jobId, request);
        return done('Limits changed', `Concurrency ${limits.concurrency}, tolerated failures ${limits.allowedFailures ?? 'no threshold'}.`);
      }
      case 'flag': {
        const reason = field('reason');
        const item = field('item');
        if (!reason) throw new HttpError(400, 'give a reason for the flag');
        if (!confirmed) return ask(`Flag ${item ? `item ${item} of ` : ''}${jobId} for investigation: “${reason}”?`, { reason, ...(item ? { item } : {}) });
        const answer = await client.flag(jobId, { reason, ...(item ? { item } : {}) });
        return done('Flagged', `${jobId} has ${answer.flags} flag(s).`);
      }
      default:
        throw new HttpError(404, `no action ${action}`);
    }
  } catch (error) {
    if (error instanceof FaultlineClientError) return [error.code === 'not_found' ? 404 : 409, outcomePage(jobId, 'Not done', error.message, false, context)];
    if (error instanceof HttpError) return [error.status, outcomePage(jobId, 'Not done', error.message, false, context)];
    throw error;
  }
}
