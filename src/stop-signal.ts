/**
 * How long-running commands (`worker --processes N`, `dev`, `codec-server`) learn to stop: the
 * first SIGINT or SIGTERM. Ctrl-C reaches every process of the terminal's group and supervisors
 * send SIGTERM too, so later signals only say a stop is under way.
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
  return {
    stopped,
    release() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
