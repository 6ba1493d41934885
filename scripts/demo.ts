/**
 * `npm run demo`: starts a Temporal dev server and a worker when none is reachable, runs the
 * sample job, prints its outputs and errors, writes the JobResult JSON, prints the Web UI link,
 * then stops what it started (`--keep` leaves them running until Ctrl-C).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { FaultlineClient } from '../src/client';
import { renderResult } from '../src/cli/output';
import { loadConfig } from '../src/config';
import { type DevServer, isReachable, startDevServer, TemporalCliUnavailable } from '../src/devserver/temporal-cli';
import { createLogger } from '../src/logger';
import { loadSecretKey } from '../src/secrets';
import { localStateDir } from '../src/storage';
import { DEFAULT_UI_PORT } from '../src/shared';
import { createFaultlineWorker } from '../src/worker';

const ROOT = path.resolve(__dirname, '..');

/** The sample images job: every kind of outcome from the committed sample files. */
function imagesDemoSpec() {
  const file = (name: string) => pathToFileURL(path.join(ROOT, 'samples', 'images', name)).toString();
  return {
    pipeline: 'images',
    items: [
      { id: 'photo-with-exif', source: file('with-exif.jpg') },
      { id: 'photo-no-exif', source: file('no-exif.jpg') },
      { id: 'logo-alpha', source: file('alpha.png'), outputs: ['thumbnail', 'metadata'] },
      { id: 'upload-truncated', source: file('truncated.jpg') },
      { id: 'not-an-image', source: file('not-an-image.jpg') },
      { id: 'icon-too-small', source: file('tiny.png') },
      { id: 'noise-tight-budget', source: file('noise.png'), outputs: ['fit'] },
    ],
    outputs: ['thumbnail', 'preview', 'metadata', 'exif'],
    params: { fit: { maxBytes: 1200 }, filter: { minWidth: 64, minHeight: 64 } },
    destination: pathToFileURL(path.join(ROOT, 'demo-output', 'files')).toString(),
    options: { archive: true },
    labels: { purpose: 'demo' },
  };
}

async function main(): Promise<number> {
  const keep = process.argv.includes('--keep');
  const specFile = process.argv.find((arg) => arg.endsWith('.json'));
  const baseConfig = loadConfig(process.env, ROOT);
  const logger = createLogger({ level: process.env.FAULTLINE_LOG_LEVEL ?? 'error', format: baseConfig.logFormat, name: 'faultline-demo' });

  let server: DevServer | undefined;
  let address = baseConfig.address;
  let uiBase = `http://localhost:${DEFAULT_UI_PORT}`;
  if (!(await isReachable(address))) {
    console.log('No Temporal server reachable; starting the embedded dev server…');
    server = await startDevServer({ port: 7233, uiPort: DEFAULT_UI_PORT, log: (line) => console.log(`  ${line}`) });
    address = server.address;
    uiBase = server.uiUrl ?? uiBase;
  }
  const config = { ...baseConfig, address };
  loadSecretKey(config.secretKey, localStateDir(config.storage), true);
  const { worker, connection } = await createFaultlineWorker({ config, logger });
  const running = worker.run();
  const client = await FaultlineClient.connect({ config });
  try {
    const spec = specFile ? (JSON.parse(await readFile(specFile, 'utf8')) as unknown) : imagesDemoSpec();
    const { jobId } = await client.start(spec);
    console.log(`Started job ${jobId} (${specFile ? path.relative(ROOT, specFile) : 'images pipeline over samples/images'}); waiting for its result…\n`);
    const result = await client.result(jobId);
    console.log(renderResult(result));
    const outDir = path.join(ROOT, 'demo-output');
    await mkdir(outDir, { recursive: true });
    const resultFile = path.join(outDir, 'result.json');
    await writeFile(resultFile, `${JSON.stringify(result, null, 2)}\n`);
    console.log(`\nJobResult JSON: ${path.relative(process.cwd(), resultFile)}`);
    console.log(`Web UI: ${uiBase}/namespaces/${config.namespace}/workflows/${encodeURIComponent(jobId)}`);
    if (keep) {
      console.log('\n--keep: server and worker keep running; Ctrl-C stops them.');
      await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
    } else if (server) {
      console.log('(the embedded server stops now; run `npm run demo -- --keep` or `npx faultline dev` to browse the Web UI)');
    }
    return 0;
  } finally {
    await client.close();
    worker.shutdown();
    await running;
    await connection.close();
    await server?.stop();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(`demo failed: ${error instanceof TemporalCliUnavailable ? error.message : error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  },
);
