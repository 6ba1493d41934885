/**
 * One process of the `raw` baseline: the bench forks one per core and hands each a share of the
 * items, so raw is the machine's limit for the work itself (no Temporal, no Faultline).
 */
import { burnCpu } from '../src/pipelines/synthetic';
import { thumbnailWork } from './naive-activities';

export interface RawShare {
  kind: 'cpu1ms' | 'thumbnail';
  from: number;
  to: number;
  source: string;
  outDir: string;
}

process.on('message', (share: RawShare) => {
  const before = process.cpuUsage();
  void (async () => {
    for (let i = share.from; i < share.to; i++) {
      if (share.kind === 'cpu1ms') await burnCpu(1);
      else await thumbnailWork(share.source, share.outDir, `r${i}`);
    }
    // Its CPU for the share, told before it exits: the bench cannot read /proc of a process that is gone.
    const { user, system } = process.cpuUsage(before);
    process.send?.({ done: share.to - share.from, cpuSeconds: (user + system) / 1e6 }, () => process.disconnect());
  })();
});
process.send?.({ ready: true });
