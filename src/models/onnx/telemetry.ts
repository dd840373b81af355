/**
 * onnxruntime-node 1.30's Linux build starts Microsoft's telemetry client with every session: it
 * tries HTTPS uploads and leaves an empty /tmp/mat-debug-<pid>.log behind each process. A model
 * server defended by this package should not phone home unasked, so telemetry is off unless the
 * user set ORT_DISABLE_TELEMETRY themselves. The library reads the process environment (getenv),
 * which only the main thread's process.env writes through to: this must run in the main thread
 * before a worker thread or a child imports onnxruntime.
 */
export function keepOnnxRuntimeOffline(): void {
  process.env.ORT_DISABLE_TELEMETRY ??= '1';
}
