/** Clean shutdown for the long-running commands: the first SIGINT/SIGTERM closes, a second one exits at once. */
export function closeOnSignals(close: () => Promise<void>, log: (line: string) => void = (line) => process.stderr.write(`${line}\n`)): void {
  let closing = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (closing) process.exit(130);
    closing = true;
    log(`${signal}: closing`);
    close().then(
      () => process.exit(0),
      (error: Error) => {
        log(`error while closing: ${error.message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}
