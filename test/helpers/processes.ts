/** What tests need to know about real processes (Linux /proc) and in-process workers against a given config. */
import { readFileSync, readdirSync } from 'node:fs';
import { FaultlineClient } from '../../src/client';
import type { Config } from '../../src/config';
import { createLogger } from '../../src/logger';
import { createFaultlineWorker } from '../../src/worker';
import { workflowBundle } from './env';

/** Direct children of `parent` running Faultline's worker (a supervisor's worker processes). */
export function workerChildren(parent: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parent && readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('worker')) pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}

/** Every string and byte string (as UTF-8) in a value: what a reader of raw histories or results could see. */
export function everyText(value: unknown, out: string[] = []): string[] {
  if (value instanceof Uint8Array) out.push(Buffer.from(value).toString('utf8'));
  else if (typeof value === 'string') out.push(value);
  else if (Array.isArray(value)) for (const entry of value) everyText(entry, out);
  else if (value && typeof value === 'object') for (const entry of Object.values(value)) everyText(entry, out);
  return out;
}

/** An in-process worker and a client for `config`; `stop` shuts both down. */
export async function workerAndClient(config: Config): Promise<{ client: FaultlineClient; stop(): Promise<void> }> {
  const { worker, connection } = await createFaultlineWorker({ config, logger: createLogger({ level: 'error', format: 'json' }), workflowBundle: await workflowBundle() });
  const running = worker.run();
  const client = await FaultlineClient.connect({ config });
  return {
    client,
    async stop() {
      await client.close();
      worker.shutdown();
      await running;
      await connection.close();
    },
  };
}
