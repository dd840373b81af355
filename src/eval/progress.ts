/** How the evaluation reports progress, without depending on a terminal: the CLI passes its bars. */
export interface ProgressReporter {
  update(done: number, status?: string): void;
  finish(status?: string): void;
}

export type ProgressFactory = (label: string, total: number) => ProgressReporter;

export const silentProgress: ProgressFactory = () => ({ update() {}, finish() {} });
