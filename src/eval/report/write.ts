/** Writes the report into the results folder: results.json, results.csv, the plots and report.html. */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RunRecord } from '../records/run-record.js';
import { renderHtml, type ReportMeta } from './html.js';
import { buildPlots } from './plots.js';
import { reportRows, toCsv } from './table.js';

export interface ReportFiles {
  json: string;
  csv: string;
  html: string;
  plots: string[];
}

export async function writeReport(dir: string, records: readonly RunRecord[], meta: ReportMeta): Promise<ReportFiles> {
  await mkdir(dir, { recursive: true });
  const plots = buildPlots(records);
  const files: ReportFiles = {
    json: join(dir, 'results.json'),
    csv: join(dir, 'results.csv'),
    html: join(dir, 'report.html'),
    plots: plots.map((p) => join(dir, p.file)),
  };
  await writeFile(files.json, `${JSON.stringify({ ...meta, runs: records, rows: reportRows(records) }, null, 2)}\n`);
  await writeFile(files.csv, toCsv(reportRows(records)));
  await Promise.all(plots.map((p, i) => writeFile(files.plots[i], `${p.svg}\n`)));
  await writeFile(files.html, renderHtml(records, plots, meta));
  return files;
}
