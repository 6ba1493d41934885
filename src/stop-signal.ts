import { readFileSync } from 'node:fs';

/** How often a command checks that the process that started it is still there. */
const PARENT_CHECK_MS = 1_000;

/**
 * How long-running commands (`worker --processes N`, `dev`, `codec-server`) learn to stop: the
 * first SIGINT or SIGTERM. Ctrl-C reaches every process of the terminal's group and supervisors
 * send SIGTERM too, so later signals only say a stop is under way. A parent that exits without
 * passing a signal on (`npx` given SIGINT by a script) is a stop too: the command is re-parented,
 * sees it within a second, and stops everything it started (reported as SIGHUP).
 */
export function untilStopSignal(onRepeat: (signal: NodeJS.Signals) => void = () => undefined): { stopped: Promise<NodeJS.Signals>; release(): void } {
  let resolve!: (signal: NodeJS.Signals) => void;
  const stopped = new Promise<NodeJS.Signals>((done) => (resolve = done));
  let received = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (received) onRepeat(signal);
    received = true;
    resolve(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const parent = process.ppid;
  // PID 1 (a container's init) has no parent to lose; a process that leads its own group was
  // detached on purpose (`npm run stack`, a shell's `cmd &`, nohup): outliving its parent is its job.
  const watch =
    parent > 1 && !leadsOwnProcessGroup()
      ? setInterval(() => {
          if (process.ppid !== parent && !received) onSignal('SIGHUP');
        }, PARENT_CHECK_MS).unref()
      : undefined;
  return {
    stopped,
    release() {
      clearInterval(watch);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/** Whether this process leads its own process group (Linux: /proc/self/stat; elsewhere assumed not). */
export function leadsOwnProcessGroup(): boolean {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    // After "pid (comm) ": state, ppid, pgrp — comm may itself hold spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[2]) === process.pid;
  } catch {
    return false;
  }
}
