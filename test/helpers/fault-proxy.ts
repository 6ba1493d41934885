/**
 * A fault-injecting TCP proxy on 127.0.0.1 (chaos on the stack puts it between the workers and
 * MinIO): it forwards bytes both ways until told to cut every open connection with a TCP reset
 * (and reset the next few new ones on accept), or to stall: hold every byte, both ways, for a while.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';

export interface FaultProxy {
  url: string;
  /** Open connections now (what a reset would cut). */
  open(): number;
  /** Resets every open connection and the next `next` new ones; returns how many it cut. */
  reset(next?: number): number;
  /** Holds every byte, both ways and on new connections, for `ms`; then delivers them in order. */
  stall(ms: number): Promise<void>;
  close(): Promise<void>;
}

/** `port`: listen there (e.g. to come back where a closed proxy was); default a free one. */
export function startFaultProxy(target: { host: string; port: number }, port = 0): Promise<FaultProxy> {
  const pairs = new Set<{ downstream: net.Socket; upstream: net.Socket }>();
  let resetNext = 0;
  let held: { to: net.Socket; chunk: Buffer }[] | undefined;
  const forward = (to: net.Socket, chunk: Buffer) => {
    if (held) held.push({ to, chunk });
    else if (!to.destroyed) to.write(chunk);
  };
  const server = net.createServer((downstream) => {
    if (resetNext > 0) {
      resetNext -= 1;
      downstream.resetAndDestroy();
      return;
    }
    const upstream = net.connect(target);
    const pair = { downstream, upstream };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      if (!downstream.destroyed) downstream.destroy();
      if (!upstream.destroyed) upstream.destroy();
    };
    downstream.on('data', (chunk: Buffer) => forward(upstream, chunk));
    upstream.on('data', (chunk: Buffer) => forward(downstream, chunk));
    for (const socket of [downstream, upstream]) {
      socket.on('error', end);
      socket.on('close', end);
    }
  });
  return new Promise((resolve) => {
    server.listen(port, '127.0.0.1', () => {
      const listening = (server.address() as AddressInfo).port;
      resolve({
        url: `http://127.0.0.1:${listening}`,
        open: () => pairs.size,
        reset(next = 3) {
          const cut = pairs.size;
          for (const { downstream, upstream } of [...pairs]) {
            downstream.resetAndDestroy();
            upstream.destroy();
          }
          pairs.clear();
          resetNext = next;
          return cut;
        },
        async stall(ms) {
          held ??= [];
          await new Promise((done) => setTimeout(done, ms));
          const release = held;
          held = undefined;
          for (const { to, chunk } of release) if (!to.destroyed) to.write(chunk);
        },
        close: () =>
          new Promise<void>((done) => {
            for (const { downstream, upstream } of pairs) {
              downstream.destroy();
              upstream.destroy();
            }
            server.close(() => done());
          }),
      });
    });
  });
}
