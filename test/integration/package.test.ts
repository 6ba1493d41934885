/**
 * The package as a new user gets it: `npm pack` (builds dist/ with declarations and the prebuilt
 * workflow bundle), installed into a scratch CommonJS project, where the README's client example
 * (samples/client-example.ts) type-checks under `strict` and runs against a dev server served by
 * the installed package's own `faultline worker`.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { copyFile, cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { type DevServer, startDevServer } from '../../src/devserver/temporal-cli';
import { ROOT, eventually } from '../helpers/env';

const run = promisify(execFile);
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
let dir: string;
let server: DevServer;
let worker: ChildProcess | undefined;
/** The packed package, shared by the tests after the first. */
let tarball: string | undefined;

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'faultline-package-'));
  server = await startDevServer({ ui: false });
});
after(async () => {
  worker?.kill('SIGTERM');
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('the packed package', () => {
  it('installs into a scratch project where the README client example type-checks (strict) and runs', async () => {
    const { stdout } = await run(NPM, ['pack', '--json', '--pack-destination', dir], { cwd: ROOT, maxBuffer: 64 * 1024 * 1024, timeout: 180_000 });
    const [packed] = JSON.parse(stdout.slice(stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
    assert.ok(packed);
    tarball = path.join(dir, packed.filename);
    const files = packed.files.map((file) => file.path);
    for (const wanted of ['dist/index.js', 'dist/index.d.ts', 'dist/workflows.bundle.js', 'bin/faultline.js', 'docs/CONTRACT.md', 'README.md'])
      assert.ok(files.includes(wanted), `${wanted} is packed`);
    assert.ok(!files.some((file) => file.startsWith('src/') || file.startsWith('test/')), 'no sources or tests in the package');

    const project = path.join(dir, 'project');
    await mkdir(project);
    const manifest = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
    await writeFile(path.join(project, 'package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'commonjs' }));
    await writeFile(
      path.join(project, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'node16', moduleResolution: 'node16', strict: true, outDir: 'out', types: ['node'] }, include: ['example.ts', 'embedded.ts'] }),
    );
    await run(
      NPM,
      [
        'install',
        '--no-audit',
        '--no-fund',
        '--prefer-offline',
        path.join(dir, packed.filename),
        `typescript@${manifest.devDependencies.typescript}`,
        `@types/node@${manifest.devDependencies['@types/node']}`,
      ],
      { cwd: project, timeout: 240_000, maxBuffer: 64 * 1024 * 1024 },
    );
    await copyFile(path.join(ROOT, 'samples', 'client-example.ts'), path.join(project, 'example.ts'));
    await copyFile(path.join(ROOT, 'samples', 'embedded-example.ts'), path.join(project, 'embedded.ts'));
    const readme = await readFile(path.join(ROOT, 'README.md'), 'utf8');
    assert.ok(readme.includes(await readFile(path.join(project, 'example.ts'), 'utf8')), 'the README shows exactly this code');
    assert.ok(readme.includes(await readFile(path.join(project, 'embedded.ts'), 'utf8')), 'the README shows exactly the embedding example');

    // Strict type-check (the package's declarations and the Temporal types they name) and emit.
    const typecheck = await run(path.join(project, 'node_modules', '.bin', 'tsc'), ['-p', '.'], { cwd: project }).catch((error: { stdout: string }) => error);
    assert.equal(typecheck.stdout, '', `tsc: ${typecheck.stdout}`);

    const env = { ...process.env, TEMPORAL_ADDRESS: server.address, FAULTLINE_TASK_QUEUE: 'faultline-package', FAULTLINE_STORAGE: path.join(dir, 'storage'), FAULTLINE_LOG_FORMAT: 'json' };
    let logs = '';
    worker = spawn(path.join(project, 'node_modules', '.bin', 'faultline'), ['worker', '--processes', '1'], { cwd: project, env, stdio: ['ignore', 'ignore', 'pipe'] });
    worker.stderr?.on('data', (chunk: Buffer) => (logs += chunk.toString()));
    process.once('exit', () => worker?.kill('SIGKILL'));
    await eventually(() => logs.includes('"worker started"'), 60_000, `the installed worker to start: ${logs.slice(-500)}`);
    assert.ok(!(await readdir(path.join(project, 'node_modules', 'faultline'))).includes('src'));

    const example = await run(process.execPath, [path.join(project, 'out', 'example.js')], { cwd: project, env, timeout: 60_000 });
    const line = JSON.parse(example.stdout.trim().split('\n').pop() ?? '{}') as { status?: string; counts?: { Available: number; Failed: number } };
    assert.equal(line.status, 'PartiallySucceeded');
    assert.deepEqual([line.counts?.Available, line.counts?.Failed], [1, 1]);

    // The embedding example runs its own worker (from the installed package's prebuilt bundle) on a queue no other worker serves.
    const embedded = await run(process.execPath, [path.join(project, 'out', 'embedded.js')], {
      cwd: project,
      env: { ...env, FAULTLINE_TASK_QUEUE: 'faultline-package-embedded', FAULTLINE_LOG_LEVEL: 'warn' },
      timeout: 60_000,
    });
    const embeddedLine = JSON.parse(embedded.stdout.trim().split('\n').pop() ?? '{}') as { status?: string; counts?: { Available: number } };
    assert.equal(embeddedLine.status, 'Succeeded', embedded.stdout.slice(-500));
    assert.equal(embeddedLine.counts?.Available, 1);
  });

  it('examples/word-count, a user project of its own, installs the tarball and zod 4, type-checks strictly and passes its own test', async () => {
    assert.ok(tarball, 'the package was packed by the test before');
    const project = path.join(dir, 'word-count');
    await cp(path.join(ROOT, 'examples', 'word-count'), project, { recursive: true, filter: (source) => !/node_modules|[/\\]dist$/.test(source) });
    const manifest = JSON.parse(await readFile(path.join(project, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    manifest.dependencies.faultline = `file:${tarball}`;
    await writeFile(path.join(project, 'package.json'), JSON.stringify(manifest, null, 2));
    const readme = await readFile(path.join(ROOT, 'README.md'), 'utf8');
    assert.ok(readme.includes(await readFile(path.join(project, 'src', 'pipeline.ts'), 'utf8')), 'the README shows exactly this pipeline');
    await run(NPM, ['install', '--no-audit', '--no-fund', '--prefer-offline'], { cwd: project, timeout: 240_000, maxBuffer: 64 * 1024 * 1024 });
    const zod = JSON.parse(await readFile(path.join(project, 'node_modules', 'zod', 'package.json'), 'utf8')) as { version: string };
    assert.match(zod.version, /^4\./, 'the user gets zod 4');
    const build = await run(NPM, ['run', 'build'], { cwd: project }).catch((error: { stdout: string }) => error);
    assert.doesNotMatch(build.stdout, /error TS/, `tsc: ${build.stdout}`);
    // Without NODE_TEST_CONTEXT: the example's own `node --test` is a test run of its own, not a nested one.
    const { NODE_TEST_CONTEXT: _nested, ...parentEnv } = process.env;
    const env = { ...parentEnv, TEMPORAL_ADDRESS: server.address, FAULTLINE_TASK_QUEUE: 'faultline-word-count', FAULTLINE_STORAGE: path.join(dir, 'wc-storage'), FAULTLINE_LOG_LEVEL: 'warn' };
    const tested = await run(process.execPath, ['--test', path.join(project, 'dist', 'test.js')], { cwd: project, env, timeout: 180_000 }).catch((error: { stdout: string; stderr: string }) => error);
    assert.match(tested.stdout, /# pass 1/, `${tested.stdout}\n${tested.stderr}`);
    assert.match(tested.stdout, /# fail 0/);
  });

  it("FAULTLINE_FROM_DIST=1 runs the clone's built dist/ (as the bench does), and says so in one line when dist/ is missing", async () => {
    assert.ok(tarball, 'the package was packed (dist/ built) by the test before');
    // Which CLI module the process loaded, told on exit by a preloaded script.
    const probe = path.join(dir, 'which-cli.js');
    await writeFile(
      probe,
      `const path = require('node:path');
process.on('exit', () => {
  const cli = Object.keys(require.cache).filter((file) => /[\\\\/](src|dist)[\\\\/]cli[\\\\/]main\\.(ts|js)$/.test(file));
  console.error(cli.map((file) => path.relative(process.cwd(), file)).join(','));
});
`,
    );
    const loaded = async (env: NodeJS.ProcessEnv) =>
      (await run(process.execPath, ['-r', probe, path.join(ROOT, 'bin', 'faultline.js'), '--help'], { cwd: ROOT, env: { ...process.env, ...env } })).stderr.trim();
    assert.equal(await loaded({ FAULTLINE_FROM_DIST: '1' }), path.join('dist', 'cli', 'main.js'));
    assert.equal(await loaded({ FAULTLINE_FROM_DIST: '' }), path.join('src', 'cli', 'main.ts'));
    // A clone without dist/: the bin alone, copied where no dist/ is beside it.
    await mkdir(path.join(dir, 'bare', 'bin'), { recursive: true });
    await copyFile(path.join(ROOT, 'bin', 'faultline.js'), path.join(dir, 'bare', 'bin', 'faultline.js'));
    const bare = await run(process.execPath, [path.join(dir, 'bare', 'bin', 'faultline.js'), '--help'], { env: { ...process.env, FAULTLINE_FROM_DIST: '1' } }).catch(
      (error: { code: number; stderr: string }) => error,
    );
    assert.equal((bare as { code?: number }).code, 1);
    assert.equal(bare.stderr.trim(), 'error: FAULTLINE_FROM_DIST=1 but dist/ is not built: run npm run build');
  });
});
