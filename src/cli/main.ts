/**
 * `faultline` CLI (CONTRACT.md). Errors are one clear line on stderr with the contract's exit
 * code; `--json` prints exactly one JSON document on stdout.
 */
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { FaultlineClient, FaultlineClientError } from '../client';
import { ConfigError, loadConfig } from '../config';
import { createLogger } from '../logger';
import { type CancelResponse, type OutputStatus, OutputStatuses, exitCodeForStatus, limitsProblems, planOf } from '../shared';
import { type ExportFormat, ExportFormats } from '../export';
import { loadPipelineModules } from '../pipeline-modules';
import { pipelineRegistry } from '../pipelines';
import { printProgress, printResult, watchJob } from './output';
import { runBulk } from './bulk';
import { collectGarbage, parseAge } from './gc';
import { DevPortBusy, runDev } from './dev';
import { runWorker } from '../worker';
import { superviseWorkers } from '../supervisor';
import { untilStopSignal } from '../stop-signal';
import { writeWorkflowBundle } from '../workflow-bundle';
import { PayloadKeyError, codecFromConfig } from '../codec';
import { SearchAttributesMissing } from '../search-attributes-check';
import { StorageUnusable, createStorage } from '../storage';
import { startCodecServer, uiOrigins } from '../codec-server';
import { WEB_DEFAULT_PORT, WebRefused, startWebFor } from '../web/server';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ENV } from '../shared/constants';

class UsageError extends Error {}

/** The same table as the README's "Exit codes" (docs/CONTRACT.md). */
export const EXIT_CODES_HELP = `
Exit codes:
  0  done; for start --wait and result: Succeeded or Empty
  1  the job Failed or was Cancelled; any other error (a worker that cannot start)
  2  invalid input or usage, nothing was started; a rejected request (conflict, closed job,
     nothing to retry); a bad configuration (FAULTLINE_*, missing search attributes, busy port)
  3  the job PartiallySucceeded (start --wait, result)
  4  cannot reach Temporal
  5  no such job`;

async function withClient<T>(fn: (client: FaultlineClient) => Promise<T>): Promise<T> {
  const config = loadConfig();
  // With FAULTLINE_PIPELINES set, specs of those pipelines are validated here before anything starts.
  const client = await FaultlineClient.connect({ config, pipelines: await loadPipelineModules(config.pipelineModules) });
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

async function readSpec(file: string): Promise<unknown> {
  let text: string;
  try {
    text = file === '-' ? await readStdin() : await readFile(file, 'utf8');
  } catch (error) {
    throw new UsageError(`cannot read spec ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  return parseSpecText(text, file);
}

/** A spec file's text as JSON, or a typed `invalid` error naming the file (never a stack trace). */
export function parseSpecText(text: string, file: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new FaultlineClientError('invalid', `spec ${file} is not valid JSON: ${(error as Error).message}`, [{ path: '(root)', code: 'invalid_json', message: (error as Error).message }]);
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** `start --priority/--tenant/--weight` into the spec's options (the spec's own values are replaced); the spec's schema checks them. */
function withScheduling(spec: unknown, opts: { priority?: string; tenant?: string; weight?: string }): unknown {
  if (opts.priority === undefined && opts.tenant === undefined && opts.weight === undefined) return spec;
  if (!spec || typeof spec !== 'object' || Array.isArray(spec)) throw new UsageError('the spec must be a JSON object');
  const number = (value: string, flag: string) => {
    const parsed = Number(value);
    if (value.trim() === '' || !Number.isFinite(parsed)) throw new UsageError(`${flag} must be a number, not "${value}"`);
    return parsed;
  };
  const options = { ...((spec as { options?: object }).options ?? {}) };
  if (opts.priority !== undefined) Object.assign(options, { priority: number(opts.priority, '--priority') });
  if (opts.tenant !== undefined) Object.assign(options, { tenant: opts.tenant });
  if (opts.weight !== undefined) Object.assign(options, { weight: number(opts.weight, '--weight') });
  return { ...spec, options };
}

/** Waits for the result, prints it, and sets the CONTRACT exit code from its status. */
async function printResultOf(client: FaultlineClient, jobId: string, json: boolean, outputs = false): Promise<void> {
  const result = await client.result(jobId);
  if (outputs) {
    // Streamed from the manifest (wherever job storage is), so a million outputs never sit in memory.
    for await (const record of client.outputRecords(result)) if (!process.stdout.write(`${JSON.stringify(record)}\n`)) await once(process.stdout, 'drain');
  } else {
    printResult(result, json);
  }
  process.exitCode = exitCodeForStatus(result.status);
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function buildProgram(): Command {
  const program = new Command('faultline')
    .description('Durable batch jobs on Temporal that fail well: per-output statuses, typed errors, retries.')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText('after', EXIT_CODES_HELP)
    .exitOverride();

  program
    .command('dev')
    .description('start the embedded Temporal dev server (Web UI on) and a worker; Ctrl-C stops both')
    .option('--port <n>', 'gRPC port of the dev server', '7233')
    .option('--ui-port <n>', 'Web UI port', '8233')
    .option('--web-port <n>', 'port of Faultline web (jobs, items, actions); 0: off', String(WEB_DEFAULT_PORT))
    .option('--db <file>', 'SQLite file that keeps jobs across restarts (default: dev.db in the job storage folder)')
    .option('--ephemeral', 'keep nothing: the dev server runs in memory')
    .action(async (opts: { port: string; uiPort: string; webPort: string; db?: string; ephemeral?: boolean }) => {
      if (opts.db && opts.ephemeral) throw new UsageError('give --db or --ephemeral, not both');
      process.exitCode = await runDev({
        port: parsePort(opts.port, '--port'),
        uiPort: parsePort(opts.uiPort, '--ui-port'),
        webPort: opts.webPort === '0' ? 0 : parsePort(opts.webPort, '--web-port'),
        db: opts.ephemeral ? { kind: 'memory' } : { kind: 'file', ...(opts.db ? { path: opts.db } : {}) },
      });
    });

  program
    .command('worker')
    .description('run worker processes against TEMPORAL_ADDRESS, one per core by default (graceful shutdown on SIGTERM/SIGINT)')
    .option('--processes <n>', `worker processes on this host, restarted when they die (default: ${ENV.workerProcesses} or one per core)`)
    .option('--pipelines <module>', `a module whose exported pipelines (definePipeline) this worker serves too (repeatable; or ${ENV.pipelines})`, collect)
    .option('--pipeline-queue <name>', `serve the task queue of pipelines that declare one (e.g. gpu) instead of the main queue (or ${ENV.pipelineQueue})`)
    .action(async (opts: { processes?: string; pipelines?: string[]; pipelineQueue?: string }) => {
      // Through the environment, so supervised worker processes load them too.
      if (opts.pipelines) process.env[ENV.pipelines] = opts.pipelines.map((module) => path.resolve(module)).join(path.delimiter);
      if (opts.pipelineQueue) process.env[ENV.pipelineQueue] = opts.pipelineQueue;
      const config = loadConfig();
      // Loaded once here: a module that cannot load is one line and exit 2, not a restart loop.
      await loadPipelineModules(config.pipelineModules);
      const processes = opts.processes === undefined ? config.workerProcesses : parseCount(opts.processes, '--processes');
      const logger = createLogger({ level: config.logLevel, format: config.logFormat, name: 'faultline-worker' });
      // A supervised process (an IPC channel to its supervisor) restarted while job storage is away waits for it; the supervisor checked it at its own start.
      if (processes === 1) {
        const supervised = process.channel !== undefined;
        // A supervised process that has stopped, or failed to start, exits for its supervisor to see, whatever still holds it open.
        await runWorker({ config, logger, waitForStorage: supervised }).finally(() => supervised && setTimeout(() => process.exit(), SUPERVISED_EXIT_GRACE_MS).unref());
      } else {
        // Checked once here too: processes that cannot start would only be restarted over and over.
        await createStorage(config.storage, config.s3).check();
        process.exitCode = await superviseWorkers({ processes, logger, shutdownGraceMs: config.shutdownGraceMs, maxHeapMb: config.workerMaxHeapMb, gc: config.workerGc });
      }
    });

  program
    .command('pipelines')
    .description('list the pipelines a worker serves: the built-ins and those of --pipelines modules (name, version, outputs, steps, task queue, work)')
    .option('--pipelines <module>', `a module of your own pipelines (repeatable; or ${ENV.pipelines})`, collect)
    .option('--json', 'print JSON only')
    .action(async (opts: { pipelines?: string[]; json?: boolean }) => {
      const config = loadConfig();
      const modules = opts.pipelines ? opts.pipelines.map((module) => path.resolve(module)) : config.pipelineModules;
      const registry = pipelineRegistry(await loadPipelineModules(modules));
      const rows = Object.values(registry).map((definition) => ({ ...planOf(definition), description: definition.description }));
      if (opts.json) return void console.log(JSON.stringify(rows, null, 2));
      for (const row of rows) {
        const steps = row.steps.map((step) => `${step.name} (${step.retry.maxAttempts === 0 ? 'unlimited' : step.retry.maxAttempts} attempts)`).join(' → ');
        console.log(
          `${row.name}@${row.version}  outputs: ${row.outputs.join(', ')}  steps: ${steps}  queue: ${row.taskQueue ?? `${config.taskQueue} (main)`}${row.work === 'cpu' ? '  work: cpu' : ''}`,
        );
      }
    });

  program
    .command('codec-server')
    .description(`serve Temporal's remote codec protocol (/encode, /decode) with ${ENV.payloadKey}, so the Web UI and \`temporal --codec-endpoint\` show encrypted payloads`)
    .option('--port <n>', 'port to listen on', '8888')
    .option('--host <address>', 'address to listen on', '127.0.0.1')
    .option('--origin <url>', 'a Web UI origin allowed to call it (repeatable; default: http://localhost:8233 and http://localhost:8080)', collect)
    .action(async (opts: { port: string; host: string; origin?: string[] }) => {
      const config = loadConfig();
      const codec = codecFromConfig(config);
      if (!codec) throw new UsageError(`codec-server needs ${ENV.payloadKey} (the key the workers use)`);
      const origins = opts.origin ?? [...uiOrigins(8233), ...uiOrigins(8080)];
      const server = await startCodecServer({
        codec,
        port: parsePort(opts.port, '--port'),
        host: opts.host,
        origins,
        ...(config.codecToken ? { token: config.codecToken } : {}),
        log: (line) => console.error(line),
      });
      console.error(`codec server on ${server.url} (key ${codec.currentKeyId}; origins ${origins.join(', ')}${config.codecToken ? '; bearer token required' : ''}); Ctrl-C stops it`);
      const signal = untilStopSignal();
      await signal.stopped;
      await server.close();
      signal.release();
    });

  program
    .command('web')
    .description("serve the web app: jobs, a job page (counts, progress, failures by type, items, an item's report) and its actions")
    .option('--port <n>', "port to listen on (8233 is the Temporal Web UI's in faultline dev)", String(WEB_DEFAULT_PORT))
    .option('--host <address>', `address to listen on; beyond loopback only with ${ENV.webToken} set`, '127.0.0.1')
    .action(async (opts: { port: string; host: string }) => {
      await withClient(async (client) => {
        const config = loadConfig();
        const web = await startWebFor(client, config, { port: parsePort(opts.port, '--port'), host: opts.host }, (line) => console.error(line));
        console.error(`Faultline web on ${web.url}${config.webToken ? ' (sign in with FAULTLINE_WEB_TOKEN)' : ''}; Ctrl-C stops it`);
        const signal = untilStopSignal();
        await signal.stopped;
        await web.close();
        signal.release();
      });
    });

  program
    .command('bundle', { hidden: true })
    .description('write the workflow bundle to a file (npm run build; supervisors build theirs this way)')
    .argument('<file>', 'where to write it')
    .action(async (file: string) => {
      await writeWorkflowBundle(path.resolve(file));
    });

  program
    .command('start')
    .description('validate a job spec and start the job; prints the job id')
    .argument('<spec>', 'path to a job spec JSON file ("-" for stdin)')
    .option('--wait', 'wait for the result (exit code from its status)')
    .option('--json', 'print JSON only')
    .option('--id <jobId>', 'job id; also an idempotency key')
    .option('--items <file>', 'items from an NDJSON file (one item per line) instead of the spec\'s "items": streamed into job storage, validated on the way; workers read it slice by slice')
    .option('--priority <n>', 'options.priority: 1 (first) … 5 (last), default 3')
    .option('--tenant <name>', "options.tenant: jobs of one tenant share that tenant's fair share of the workers (default: the job id)")
    .option('--weight <w>', "options.weight: the tenant's share relative to others (default 1)")
    .action(async (file: string, opts: { wait?: boolean; json?: boolean; id?: string; items?: string; priority?: string; tenant?: string; weight?: string }) => {
      const read = await readSpec(file);
      let spec = withScheduling(read, opts);
      if (opts.items) {
        if (!read || typeof read !== 'object' || Array.isArray(read)) throw new UsageError('the spec must be a JSON object');
        if ('items' in read || 'itemsFrom' in read) throw new UsageError('--items replaces the spec\'s "items"/"itemsFrom": leave them out of the spec');
        spec = { ...read, itemsFrom: pathToFileURL(path.resolve(opts.items)).toString() };
      }
      await withClient(async (client) => {
        const started = await client.start(spec, opts.id ? { jobId: opts.id } : {});
        const pipeline = (spec as { pipeline?: unknown } | null)?.pipeline;
        // A pipeline this CLI does not know was checked by no one yet: a worker's issues still exit 2.
        if (!opts.wait && typeof pipeline === 'string' && client.registry[pipeline] === undefined) {
          await client.awaitSpecCheck(started.jobId, { onSlow: () => opts.json || console.error(`job ${started.jobId}: waiting for a worker that knows pipeline "${pipeline}" to check the spec…`) });
        }
        if (!opts.wait) {
          if (opts.json) console.log(JSON.stringify({ jobId: started.jobId, existing: started.existing }));
          else console.log(started.jobId);
          return;
        }
        if (!opts.json) console.error(`${started.existing ? 'existing' : 'started'} job ${started.jobId}; waiting for its result…`);
        await printResultOf(client, started.jobId, opts.json === true);
      });
    });

  program
    .command('result')
    .description('wait for and print the result of a job')
    .argument('<jobId>')
    .option('--json', 'print JSON only')
    .option('--outputs', "print every output record as NDJSON (one per line), read from the job's manifest in job storage")
    .action(async (jobId: string, opts: { json?: boolean; outputs?: boolean }) => {
      await withClient((client) => printResultOf(client, jobId, opts.json === true, opts.outputs === true));
    });

  program
    .command('export')
    .description("write a job's output records grouped by status (one file per status + manifest.json) to a folder or s3://bucket/prefix")
    .argument('<jobId>')
    .argument('<destination>', 'a folder, or s3://bucket/prefix (FAULTLINE_S3_* settings)')
    .option('--status <statuses>', 'only these statuses, comma-separated (e.g. Failed,Missing)')
    .option('--type <errorType>', 'only records that failed with this error type (repeatable)', collect)
    .option('--format <format>', 'ndjson or csv (fixed column order)', 'ndjson')
    .option('--round <n>', 'a settled round (default: the latest)', parseNumber)
    .option('--json', 'print the manifest as JSON')
    .action(async (jobId: string, destination: string, opts: { status?: string; type?: string[]; format: string; round?: number; json?: boolean }) => {
      if (!(ExportFormats as readonly string[]).includes(opts.format)) throw new UsageError(`--format is ndjson or csv, not "${opts.format}"`);
      const statuses = opts.status
        ?.split(',')
        .map((status) => status.trim())
        .filter(Boolean);
      const unknown = statuses?.filter((status) => !(OutputStatuses as readonly string[]).includes(status)) ?? [];
      if (unknown.length > 0) throw new UsageError(`--status takes ${OutputStatuses.join(', ')}; not ${unknown.join(', ')}`);
      await withClient(async (client) => {
        const manifest = await client.export(jobId, destination, {
          format: opts.format as ExportFormat,
          ...(statuses ? { statuses: statuses as OutputStatus[] } : {}),
          ...(opts.type ? { types: opts.type } : {}),
          ...(opts.round !== undefined ? { round: opts.round } : {}),
        });
        if (opts.json) console.log(JSON.stringify(manifest));
        else {
          for (const file of manifest.files) console.log(`${file.file}\t${file.records} record(s)\t${file.bytes} bytes\tsha256 ${file.sha256}`);
          console.error(`exported ${manifest.files.reduce((sum, file) => sum + file.records, 0)} record(s) of ${jobId} (round ${manifest.round}) to ${manifest.destination} with manifest.json`);
        }
      });
    });

  program
    .command('status')
    .description('progress of a job: phase, counts so far, items waiting in backoff')
    .argument('<jobId>')
    .option('--json', 'print JSON only')
    .action(async (jobId: string, opts: { json?: boolean }) => {
      await withClient(async (client) => printProgress(await client.progress(jobId), opts.json === true));
    });

  program
    .command('rate-limits')
    .description('every rate key limited now (one limiter per key, shared by all workers and jobs): leases, waiting items, pauses')
    .option('--json', 'print JSON only')
    .action(async (opts: { json?: boolean }) => {
      await withClient(async (client) => {
        const views = await client.rateLimiters();
        if (opts.json) return void console.log(JSON.stringify(views));
        if (views.length === 0) console.log('no rate key is limited now');
        for (const view of views) {
          const jobs = Object.entries(view.jobs)
            .map(([jobId, counts]) => `${jobId} ${counts.inFlight}+${counts.waiting}`)
            .join(', ');
          console.log(
            `${view.key}: ${view.limit.perSecond}/s, ${view.limit.concurrency} at once; ${view.inFlight} in flight, ${view.waiting} waiting; now ${view.effectivePerSecond}/s; granted ${view.granted}, host pauses ${view.backoffs}${view.blockedUntil ? ` (paused until ${view.blockedUntil})` : ''}${jobs ? `; jobs (in flight+waiting): ${jobs}` : ''}`,
          );
        }
      });
    });

  program
    .command('watch')
    .description('progress until the job settles: a live bar on a terminal, else a line per change (--json: JSON lines on stdout)')
    .argument('<jobId>')
    .option('--json', 'a JSON line per change, then the result as one JSON line')
    .action(async (jobId: string, opts: { json?: boolean }) => {
      await withClient(async (client) => {
        const result = await watchJob(client, jobId, { json: opts.json === true });
        printResult(result, opts.json === true);
        process.exitCode = exitCodeForStatus(result.status);
      });
    });

  program
    .command('retry')
    .description('re-run failed items (all, by --item, by --type); in the retry window they merge into the same job')
    .argument('[jobId]')
    .option('--query <visibility query>', 'every job this Temporal visibility query matches (instead of one job id)')
    .option('--item <id>', 'only this item (repeatable)', collect)
    .option('--type <errorType>', 'only items that failed with this error type (repeatable)', collect)
    .option('--source <id=uri>', 'corrected source for an item given with --item (repeatable)', collect)
    .option('--include-cancelled', 'also items whose outputs were Cancelled (a closed job: resume after a mistaken cancel)')
    .option('--from-start', 'run every step again, ignoring checkpoints and working copies (after fixing a source in place)')
    .option('--json', 'print JSON only')
    .action(async (jobId: string | undefined, opts: { item?: string[]; type?: string[]; source?: string[]; json?: boolean; query?: string; includeCancelled?: boolean; fromStart?: boolean }) => {
      const target = oneTarget(jobId, opts.query);
      const sources: Record<string, string> = {};
      for (const pair of opts.source ?? []) {
        const at = pair.indexOf('=');
        if (at <= 0) throw new UsageError(`--source wants id=uri, got "${pair}"`);
        sources[pair.slice(0, at)] = pair.slice(at + 1);
      }
      const request = {
        ...(opts.item ? { items: opts.item } : {}),
        ...(opts.type ? { types: opts.type } : {}),
        ...(Object.keys(sources).length > 0 ? { sources } : {}),
        ...(opts.includeCancelled ? { includeCancelled: true } : {}),
        ...(opts.fromStart ? { fromStart: true } : {}),
      };
      const describeRetry = (id: string, response: Awaited<ReturnType<FaultlineClient['retry']>>) => {
        const more = response.queuedCount > response.queued.length ? ` … (+${response.queuedCount - response.queued.length} more)` : '';
        const ids = response.queued.slice(0, 20).join(', ') + (response.queued.length > 20 && !more ? ' …' : more);
        return response.followUp
          ? `job ${id} is closed; started follow-up job ${response.jobId} with ${response.queuedCount} item(s): ${ids}`
          : `queued ${response.queuedCount} item(s) for round ${response.round} of ${id}: ${ids}`;
      };
      await withClient(async (client) => {
        if (target.kind === 'query') {
          process.exitCode = await runBulk(
            client,
            target.query,
            'retry',
            async (id) => {
              const response = await client.retry(id, request);
              return { message: describeRetry(id, response), detail: response };
            },
            opts,
          );
          return;
        }
        const response = await client.retry(target.jobId, request);
        console.log(opts.json ? JSON.stringify(response) : describeRetry(target.jobId, response));
      });
    });

  program
    .command('cancel')
    .description('graceful cancel: no new work, in-flight work cancelled, finished outputs kept')
    .argument('[jobId]')
    .option('--query <visibility query>', 'every open job this Temporal visibility query matches (instead of one job id)')
    .option('--reason <text>', 'why (kept in the result)')
    .option('--json', 'print JSON only')
    .action(async (jobId: string | undefined, opts: { reason?: string; query?: string; json?: boolean }) => {
      const target = oneTarget(jobId, opts.query);
      const describeCancel = (id: string, response: CancelResponse) => (response.effect === 'closed' ? `${id}: every item had settled; the job is closed` : `cancel requested for ${id}`);
      await withClient(async (client) => {
        if (target.kind === 'query') {
          process.exitCode = await runBulk(
            client,
            target.query,
            'cancel',
            async (id) => {
              const response = await client.cancel(id, opts.reason);
              return { message: describeCancel(id, response), detail: response };
            },
            { ...opts, runningOnly: true },
          );
          return;
        }
        const response = await client.cancel(target.jobId, opts.reason);
        console.log(opts.json ? JSON.stringify({ jobId: target.jobId, ...response }) : describeCancel(target.jobId, response));
      });
    });

  const holds = [
    {
      name: 'pause',
      description: 'hold a running job: in-flight work finishes, nothing new starts, backoff timers hold',
      say: (jobId: string, phase: string) => `${jobId} is paused (phase ${phase}); resume with: faultline resume ${jobId}`,
    },
    { name: 'resume', description: 'let a paused job go on (backoff timers continue with their remaining time)', say: (jobId: string, phase: string) => `${jobId} resumed (phase ${phase})` },
  ] as const;
  for (const hold of holds) {
    program
      .command(hold.name)
      .description(hold.description)
      .argument('<jobId>')
      .option('--json', 'print JSON only')
      .action(async (jobId: string, opts: { json?: boolean }) => {
        await withClient(async (client) => {
          const response = hold.name === 'pause' ? await client.pause(jobId) : await client.resume(jobId);
          console.log(opts.json ? JSON.stringify({ jobId, ...response }) : hold.say(jobId, response.phase));
        });
      });
  }

  program
    .command('set')
    .description("change a running job's limits; they apply to the work not yet started")
    .argument('<jobId>')
    .option('--concurrency <n>', 'batches (or slices: per slice) in flight', parseNumber)
    .option('--tolerated-failure-count <n>', 'failed items tolerated (replaces the threshold)', parseNumber)
    .option('--tolerated-failure-percent <p>', 'failed items tolerated, as a share of all items (replaces the threshold)', parseNumber)
    .option('--priority <n>', 'task priority of the batches and slices scheduled from now on: 1 (first) … 5 (last)', parseNumber)
    .option('--json', 'print JSON only')
    .action(async (jobId: string, opts: { concurrency?: number; toleratedFailureCount?: number; toleratedFailurePercent?: number; priority?: number; json?: boolean }) => {
      const request = {
        ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
        ...(opts.priority !== undefined ? { priority: opts.priority } : {}),
        ...(opts.toleratedFailureCount !== undefined ? { toleratedFailureCount: opts.toleratedFailureCount } : {}),
        ...(opts.toleratedFailurePercent !== undefined ? { toleratedFailurePercent: opts.toleratedFailurePercent } : {}),
      };
      // Told in the flags' names, not the request's fields.
      const problems = limitsProblems(request).map((problem) =>
        problem
          .replace('toleratedFailureCount', '--tolerated-failure-count')
          .replace('toleratedFailurePercent', '--tolerated-failure-percent')
          .replace(/\bconcurrency\b/, '--concurrency')
          .replace(/\bpriority\b/, '--priority'),
      );
      if (problems.length > 0) throw new UsageError(problems.join('; '));
      await withClient(async (client) => {
        const limits = await client.setLimits(jobId, request);
        const threshold = limits.allowedFailures === undefined ? 'no failure threshold' : `at most ${limits.allowedFailures} failed item(s)`;
        console.log(
          opts.json
            ? JSON.stringify({ jobId, ...limits })
            : `${jobId}: concurrency ${limits.concurrency}, ${threshold}${request.priority !== undefined ? `, priority ${request.priority} for new batches` : ''}`,
        );
      });
    });

  program
    .command('flag')
    .description('mark a job (or one item) for investigation, running or closed; FaultlineFlagged = true')
    .argument('<jobId>')
    .requiredOption('--reason <text>', 'what to investigate')
    .option('--item <id>', 'only this item')
    .option('--json', 'print JSON only')
    .action(async (jobId: string, opts: { reason: string; item?: string; json?: boolean }) => {
      await withClient(async (client) => {
        const response = await client.flag(jobId, { reason: opts.reason, ...(opts.item ? { item: opts.item } : {}) });
        if (opts.json) console.log(JSON.stringify(response));
        else
          console.log(
            `${jobId} flagged${opts.item ? ` (item ${opts.item})` : ''}; ${response.flags} flag(s)${response.record === jobId ? '' : `, recorded as ${response.record} (the job had closed)`}`,
          );
      });
    });

  program
    .command('storage-check')
    .description('prove job storage (FAULTLINE_STORAGE) works: write, read back and remove a probe; --create makes a missing S3 bucket')
    .option('--create', 'create the S3 bucket when it is missing')
    .option('--json', 'print JSON only')
    .action(async (opts: { create?: boolean; json?: boolean }) => {
      const config = loadConfig();
      const storage = createStorage(config.storage, config.s3);
      const { createdBucket } = await storage.check({ create: opts.create === true });
      if (opts.json) console.log(JSON.stringify({ storage: storage.display, usable: true, createdBucket }));
      else console.log(`job storage ${storage.display} is usable${createdBucket ? ' (bucket created)' : ''}`);
    });

  program
    .command('gc')
    .description('remove the job storage of jobs closed longer ago than --older-than (never of open jobs)')
    .requiredOption('--older-than <duration>', "e.g. 7d, 12h; 0s removes every closed job's storage")
    .option('--dry-run', 'say what would be removed, remove nothing')
    .option('--json', 'print JSON only')
    .action(async (opts: { olderThan: string; dryRun?: boolean; json?: boolean }) => {
      const olderThanMs = parseAge(opts.olderThan);
      const config = loadConfig();
      await withClient(async (client) => {
        const report = await collectGarbage(client, client.storage(), olderThanMs, opts.dryRun ?? false);
        if (opts.json) {
          console.log(JSON.stringify(report));
          return;
        }
        const verb = report.dryRun ? 'would remove' : 'removed';
        for (const entry of report.removed) console.log(`${verb} ${entry.jobId} (${formatBytes(entry.bytes)})`);
        console.log(`${verb} the storage of ${report.removed.length} job(s), ${formatBytes(report.freedBytes)}; kept ${report.kept.length} (open or recent) in ${config.storage}`);
      });
    });

  program
    .command('list')
    .description('jobs from Temporal visibility')
    .addOption(new Option('--status <status>', 'FaultlineStatus').choices(['Running', 'Paused', 'Succeeded', 'PartiallySucceeded', 'Failed', 'Cancelled', 'Empty']))
    .option('--has-errors', 'only jobs with errors')
    .option('--flagged', 'only jobs flagged for investigation')
    .option('--pipeline <name>', 'only this pipeline')
    .option('--tenant <tenant>', 'only jobs of this tenant (options.tenant)')
    .addOption(new Option('--priority <1-5>', 'only jobs of this priority').choices(['1', '2', '3', '4', '5']))
    .option('--limit <n>', 'at most this many', '100')
    .option('--json', 'print JSON only')
    .action(async (opts: { status?: string; hasErrors?: boolean; flagged?: boolean; pipeline?: string; tenant?: string; priority?: string; limit: string; json?: boolean }) => {
      await withClient(async (client) => {
        const jobs = await client.list({
          ...(opts.status ? { status: opts.status } : {}),
          ...(opts.hasErrors ? { hasErrors: true } : {}),
          ...(opts.flagged ? { flagged: true } : {}),
          ...(opts.pipeline ? { pipeline: opts.pipeline } : {}),
          ...(opts.tenant ? { tenant: opts.tenant } : {}),
          ...(opts.priority ? { priority: Number(opts.priority) } : {}),
          limit: Number(opts.limit),
        });
        if (opts.json) {
          console.log(JSON.stringify(jobs));
          return;
        }
        if (jobs.length === 0) console.log('no jobs');
        for (const job of jobs) {
          console.log(
            `${job.jobId.padEnd(32)} ${String(job.pipeline).padEnd(10)} ${String(job.status).padEnd(19)} failed outputs=${job.failedCount ?? 0}${job.flagged ? ' flagged' : ''}${job.tenant !== null && job.tenant !== job.jobId ? ` tenant=${job.tenant}` : ''}${job.priority !== null ? ` priority=${job.priority}` : ''} ${job.startedAt}`,
          );
        }
      });
    });
  return program;
}

/** How long a supervised worker process that has stopped may take to exit by itself before it is made to. */
const SUPERVISED_EXIT_GRACE_MS = 10_000;

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (error) {
    return reportError(error);
  }
}

function reportError(error: unknown): number {
  if (error instanceof CommanderError) {
    return error.exitCode === 0 ? 0 : 2;
  }
  if (error instanceof FaultlineClientError) {
    console.error(`error: ${error.message}`);
    const cause = error.cause instanceof Error ? error.cause.message.split('\n')[0] : undefined;
    if (cause && !error.message.includes(cause)) console.error(`  cause: ${cause}`);
    for (const issue of error.issues) console.error(`  - ${issue.path}: ${issue.message} [${issue.code}]`);
    return error.exitCode;
  }
  if (
    error instanceof UsageError ||
    error instanceof ConfigError ||
    error instanceof DevPortBusy ||
    error instanceof WebRefused ||
    error instanceof PayloadKeyError ||
    error instanceof SearchAttributesMissing ||
    error instanceof StorageUnusable
  ) {
    console.error(`error: ${error.message}`);
    return 2;
  }
  console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
  // Temporal's own reason, one line, when ours wraps it.
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause.message.split('\n')[0] : undefined;
  if (cause && !(error as Error).message.includes(cause)) console.error(`  cause: ${cause}`);
  if (process.env.FAULTLINE_DEBUG) console.error(error);
  return 1;
}

function formatBytes(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MB` : bytes >= 1024 ? `${(bytes / 1024).toFixed(1)} KB` : `${bytes} B`;
}

/** A command that takes one job id or `--query`, never both or neither. */
function oneTarget(jobId: string | undefined, query: string | undefined): { kind: 'job'; jobId: string } | { kind: 'query'; query: string } {
  if (jobId && query !== undefined) throw new UsageError('give a job id or --query, not both');
  if (query !== undefined) return { kind: 'query', query };
  if (!jobId) throw new UsageError('give a job id or --query');
  return { kind: 'job', jobId };
}

function parsePort(value: string, flag: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 1 || port > 65_535) throw new UsageError(`${flag} wants a port number (1-65535), got "${value}"`);
  return port;
}

function parseCount(value: string, flag: string): number {
  const count = Number(value);
  if (!Number.isInteger(count) || count < 1 || count > 256) throw new UsageError(`${flag} wants a whole number from 1 to 256, got "${value}"`);
  return count;
}

function parseNumber(value: string): number {
  const parsed = Number(value);
  if (value.trim() === '' || !Number.isFinite(parsed)) throw new InvalidArgumentError(`"${value}" is not a number`);
  return parsed;
}

if (require.main === module) {
  main(process.argv).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      console.error(`error: ${String(error)}`);
      process.exitCode = 1;
    },
  );
}
