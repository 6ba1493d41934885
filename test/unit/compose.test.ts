import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { DEFAULT_ADDRESS, ENV, SEARCH_ATTRIBUTES, TASK_QUEUE } from '../../src/shared/constants';
import { MINIO_VERSION } from '../../scripts/minio';
import { POSTGRES_MAJOR, STACK_S3, TEMPORAL_SERVER_VERSION, TEMPORAL_UI_VERSION, stackDynamicConfig, stackLayout, stackWorkerSettings } from '../../scripts/stack';

const ROOT = path.resolve(__dirname, '..', '..');

interface Service {
  image?: string;
  build?: unknown;
  environment?: string[] | Record<string, string>;
  ports?: string[];
  command?: string[] | string;
  depends_on?: Record<string, unknown> | string[];
}
const compose = parse(readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8')) as { services: Record<string, Service> };

function envOf(service: Service): Record<string, string> {
  if (Array.isArray(service.environment)) {
    return Object.fromEntries(service.environment.map((entry) => [entry.split('=')[0] ?? '', entry.slice(entry.indexOf('=') + 1)]));
  }
  return service.environment ?? {};
}

describe('docker-compose.yml is consistent with the code', () => {
  it('has PostgreSQL, the schema job, Temporal, the setup job, the Web UI and the worker, at the versions `npm run stack` runs', () => {
    for (const name of ['postgresql', 'temporal-schema', 'temporal', 'temporal-ui', 'temporal-setup', 'minio', 'storage-setup', 'faultline-worker'])
      assert.ok(compose.services[name], `service ${name}`);
    assert.equal(compose.services.temporal?.image, `temporalio/server:${TEMPORAL_SERVER_VERSION}`, 'not the deprecated auto-setup');
    assert.equal(compose.services['temporal-schema']?.image, `temporalio/admin-tools:${TEMPORAL_SERVER_VERSION}`);
    assert.equal(compose.services['temporal-setup']?.image, `temporalio/admin-tools:${TEMPORAL_SERVER_VERSION}`);
    assert.equal(compose.services['temporal-ui']?.image, `temporalio/ui:${TEMPORAL_UI_VERSION}`);
    assert.equal(compose.services.postgresql?.image, `postgres:${POSTGRES_MAJOR}`);
  });

  it("MinIO is built from the Go module version the stack builds, and holds the workers' job storage", () => {
    const build = compose.services.minio?.build as { dockerfile?: string; args?: Record<string, string> };
    assert.equal(build.args?.MINIO_VERSION, MINIO_VERSION);
    const dockerfile = readFileSync(path.join(ROOT, 'docker', build.dockerfile ?? ''), 'utf8');
    assert.match(dockerfile, new RegExp(`^ARG MINIO_VERSION=${MINIO_VERSION}$`, 'm'));
    assert.match(dockerfile, /go install github\.com\/minio\/minio@\$\{MINIO_VERSION\}/);
    const worker = envOf(compose.services['faultline-worker'] ?? {});
    const stack = stackWorkerSettings(stackLayout());
    assert.equal(worker[ENV.storage], stack[ENV.storage], 'the same bucket and prefix');
    assert.equal(worker[ENV.s3Endpoint], 'http://minio:9000');
    assert.deepEqual(envOf(compose.services['storage-setup'] ?? {})[ENV.storage], worker[ENV.storage]);
    assert.deepEqual(compose.services['storage-setup']?.command, ['node', 'bin/faultline.js', 'storage-check', '--create']);
    assert.match(worker.AWS_SECRET_ACCESS_KEY ?? '', new RegExp(`:-${STACK_S3.secretAccessKey}\\}$`));
  });

  it('the stack and compose use the same worker env names', () => {
    const stackEnv = Object.keys(stackWorkerSettings(stackLayout()));
    const composeEnv = Object.keys(envOf(compose.services['faultline-worker'] ?? {}));
    for (const name of stackEnv) assert.ok(composeEnv.includes(name), `${name} is set by the stack but not by compose`);
  });

  it('wires Temporal to PostgreSQL the documented way and exposes the default port', () => {
    const env = envOf(compose.services.temporal ?? {});
    assert.equal(env.DB, 'postgres12');
    assert.equal(env.POSTGRES_SEEDS, 'postgresql');
    const port = DEFAULT_ADDRESS.split(':')[1];
    assert.ok(compose.services.temporal?.ports?.includes(`${port}:${port}`));
    assert.equal(envOf(compose.services['temporal-ui'] ?? {}).TEMPORAL_ADDRESS, `temporal:${port}`);
  });

  it('the worker uses the code’s env names and task queue', () => {
    const worker = compose.services['faultline-worker'] ?? {};
    assert.ok(worker.build, 'the worker is built from the Dockerfile');
    const env = envOf(worker);
    const known = new Set<string>([...Object.values(ENV), 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_REGION']);
    for (const name of Object.keys(env)) assert.ok(known.has(name), `unknown env ${name}`);
    assert.equal(env[ENV.taskQueue], TASK_QUEUE);
    assert.equal(env[ENV.address], 'temporal:7233');
    assert.match(env[ENV.storage] ?? '', /^s3:\/\//, 'job storage shared through the bucket, not a volume');
  });

  it('registers every search attribute with its type', () => {
    const command = [compose.services['temporal-setup']?.command ?? ''].flat().join(' ');
    for (const [name, type] of Object.entries(SEARCH_ATTRIBUTES)) {
      assert.match(command, new RegExp(`--name ${name} --type ${type}\\b`), `${name} ${type}`);
    }
  });

  it('runs faultline web with a token, and Prometheus scrapes every worker process the compose worker runs', () => {
    const web = compose.services['faultline-web'] ?? {};
    assert.deepEqual(web.command, ['node', 'bin/faultline.js', 'web', '--host', '0.0.0.0', '--port', '8234']);
    assert.match(envOf(web)[ENV.webToken] ?? '', /^\$\{FAULTLINE_WEB_TOKEN:\?/, 'bound beyond loopback, so a token is required');
    const worker = envOf(compose.services['faultline-worker'] ?? {});
    const first = Number((worker[ENV.metricsAddress] ?? '').split(':')[1]);
    const processes = Number(worker[ENV.workerProcesses]);
    const scrape = parse(readFileSync(path.join(ROOT, 'docker', 'prometheus.yml'), 'utf8')) as { scrape_configs: { dns_sd_configs: { names: string[]; port: number }[] }[] };
    const ports = scrape.scrape_configs.flatMap((config) => config.dns_sd_configs.map((sd) => sd.port)).sort();
    assert.deepEqual(
      ports,
      Array.from({ length: processes }, (_, index) => first + index),
      'one scrape port per worker process (the N-th on the first port + N)',
    );
    const provisioned = readFileSync(path.join(ROOT, 'docker', 'grafana', 'provisioning', 'dashboards', 'faultline.yml'), 'utf8');
    assert.match(provisioned, /path: \/var\/lib\/grafana\/dashboards/);
    const dashboard = JSON.parse(readFileSync(path.join(ROOT, 'docker', 'grafana', 'dashboards', 'faultline.json'), 'utf8')) as { panels: { targets: { expr: string }[] }[] };
    assert.ok(dashboard.panels.length >= 8);
  });

  it("the server's dynamic config (updates, fairness) is the stack's, mounted where DYNAMIC_CONFIG_FILE_PATH points", () => {
    assert.equal(readFileSync(path.join(ROOT, 'docker', 'dynamicconfig.yaml'), 'utf8'), stackDynamicConfig());
    const temporal = compose.services.temporal as Service & { volumes?: string[] };
    const file = envOf(temporal).DYNAMIC_CONFIG_FILE_PATH ?? '';
    assert.ok(temporal.volumes?.includes(`./docker/dynamicconfig.yaml:${file}:ro`), `mounted at ${file}`);
    assert.match(stackDynamicConfig(), /matching\.enableFairness:\n {2}- value: true/);
    // A handful of shards read their transfer queues 20 times a second each by default: new tasks wait for it.
    assert.match(stackDynamicConfig(), /history\.transferProcessorMaxPollRPS:\n {2}- value: 1000/);
  });

  it('the Dockerfile is multi-stage, production-only and non-root', () => {
    const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
    assert.equal(dockerfile.match(/^FROM /gm)?.length, 2);
    assert.match(dockerfile, /npm ci --omit=dev/);
    assert.match(dockerfile, /^USER node$/m);
    assert.match(dockerfile, /STOPSIGNAL SIGTERM/);
  });
});
