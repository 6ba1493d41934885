/**
 * One process of the `dbos` peer: a DBOS Transact application on the bench's PostgreSQL running
 * the same work function as raw's, as a DBOS user would write it: one workflow per item whose
 * work is one checkpointed step, dequeued from one queue. The bench forks one per core.
 */
import { DBOS } from '@dbos-inc/dbos-sdk';
import { burnCpu } from '../src/pipelines/synthetic';
import { thumbnailWork } from './naive-activities';

export interface DbosItem {
  kind: 'cpu1ms' | 'thumbnail' | 'noop';
  id: string;
  source: string;
  outDir: string;
}

/** The application's name, version and queue: the bench enqueues with the same. */
export const DBOS_BENCH = { name: 'faultline-bench', version: 'bench', queue: 'bench', workflow: 'benchItem', workerConcurrency: 50, pollMs: 100 } as const;

async function benchItem(item: DbosItem): Promise<number> {
  await DBOS.runStep(
    async () => {
      if (item.kind === 'cpu1ms') await burnCpu(1);
      else if (item.kind === 'thumbnail') await thumbnailWork(item.source, item.outDir, item.id);
    },
    { name: 'work' },
  );
  return 1;
}

if (require.main === module) {
  DBOS.setConfig({
    name: DBOS_BENCH.name,
    systemDatabaseUrl: process.env.BENCH_DBOS_URL ?? '',
    applicationVersion: DBOS_BENCH.version,
    executorID: `bench-${process.pid}`,
    logLevel: 'error',
    runMigrations: false,
  });
  DBOS.registerWorkflow(benchItem, { name: DBOS_BENCH.workflow });
  void (async () => {
    await DBOS.launch();
    // Tuned: with the defaults (a poll every second) one item per process per second is dequeued at concurrency 1.
    await DBOS.registerQueue(DBOS_BENCH.queue, { workerConcurrency: DBOS_BENCH.workerConcurrency, minPollingIntervalMs: DBOS_BENCH.pollMs, onConflict: 'always_update' });
    process.send?.({ ready: true });
  })();
  process.on('SIGTERM', () => {
    void DBOS.shutdown().then(() => process.exit(0));
  });
}
