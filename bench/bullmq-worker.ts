/**
 * One process of the `bullmq` peer: a BullMQ worker on the bench's Redis running the same work
 * function as raw's and Faultline's, as a BullMQ user would write it (default job options:
 * completed jobs kept, 1 attempt). The bench forks one per core.
 */
import { Worker } from 'bullmq';
import { burnCpu } from '../src/pipelines/synthetic';
import { thumbnailWork } from './naive-activities';

export interface BullmqItem {
  /** `noop`: no work (the scale workloads: what the queue itself costs per item). */
  kind: 'cpu1ms' | 'thumbnail' | 'noop';
  id: string;
  source: string;
  outDir: string;
}

const port = Number(process.env.BENCH_REDIS_PORT);
const worker = new Worker<BullmqItem>(
  'bench',
  async (job) => {
    if (job.data.kind === 'cpu1ms') await burnCpu(1);
    else if (job.data.kind === 'thumbnail') await thumbnailWork(job.data.source, job.data.outDir, job.data.id);
    return 1;
  },
  { connection: { host: '127.0.0.1', port }, concurrency: Number(process.env.BENCH_BULLMQ_CONCURRENCY ?? 1) },
);
void worker.waitUntilReady().then(() => process.send?.({ ready: true }));
process.on('SIGTERM', () => {
  void worker.close().then(() => process.exit(0));
});
