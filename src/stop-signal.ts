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
  // PID 1 (a container's init) has no parent to lose.
  const watch =
    parent > 1
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
