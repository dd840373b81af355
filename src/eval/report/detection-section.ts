/**
 * The detection section of the report: per attacker, the queries until each detector flags and the
 * knockoff's accuracy with the escalation; per detector, the benign false-positive rate. Written as
 * detection.html and, when the grid's report.html is in the same folder, inserted into it.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DetectionReport } from '../detection/run.js';
import { escapeXml } from './svg-chart.js';

const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
const queries = (v: number | null | undefined) => (v === null || v === undefined ? 'not flagged' : String(v));
const MARK_START = '<!-- detection section -->';
const MARK_END = '<!-- /detection section -->';

export function renderDetectionSection(report: DetectionReport): string {
  const head = report.detectors.map((d) => `<th>${escapeXml(d)}</th>`).join('');
  const attackerRows = report.attackers
    .map((a) => {
      const target = a.target === null ? '—' : `≤ ${a.target}: ${a.metTarget ? 'met' : 'missed'}`;
      const flags = report.detectors.map((d) => `<td>${queries(a.firstFlag[d as keyof typeof a.firstFlag])}</td>`).join('');
      return `<tr><td>${escapeXml(a.name)}</td><td>${a.queries}</td>${flags}<td>${queries(a.flaggedAt)}</td><td>${escapeXml(target)}</td><td>${pct(a.knockoffAccuracy.clean)}</td><td>${pct(a.knockoffAccuracy.withDetection)}</td></tr>`;
    })
    .join('');
  const b = report.benign;
  const benignRows = [...report.detectors, 'any']
    .map((d) => `<tr><td>${escapeXml(d)}</td><td>${b.flagged[d] ?? 0} / ${b.clients}</td><td>${pct(b.falsePositiveRate[d] ?? 0)}</td></tr>`)
    .join('');
  const hoda = report.hoda.enabled
    ? `HODA on: ${report.hoda.checkpoints} checkpoints, thresholds ${report.hoda.calibration!.thresholds.map((t) => `L=${t.length}: ${t.threshold.toFixed(4)} (${t.sequences} benign chunks)`).join(', ')}`
    : `HODA off (${escapeXml(report.hoda.note ?? '')})`;
  return `${MARK_START}
<section id="detection">
<h2>Per-client detection</h2>
<p>Each attacker and each benign client queried the real endpoint (middleware with client detection, memory store) under its own client id, ${report.requestRows} rows per attacker request. Answers are clean until the policy escalates (ladder ${escapeXml(report.ladder.join(' → '))}); the knockoff "with detection" is trained on what the attacker actually got. ${hoda}. Victim test accuracy ${pct(report.victimTestAccuracy)}.</p>
<h3>Queries until flagged</h3>
<table><thead><tr><th>attacker</th><th>queries</th>${head}<th>first flag</th><th>target</th><th>knockoff, clean answers</th><th>knockoff, with detection</th></tr></thead><tbody>${attackerRows}</tbody></table>
<h3>Benign clients: false positives</h3>
<p>${b.clients} clients, ${b.queries.min}–${b.queries.max} queries each (${b.queries.total} in all), slices of the victim's test split not used for calibration; ${b.escalated} escalated.</p>
<table><thead><tr><th>detector</th><th>clients flagged</th><th>false-positive rate</th></tr></thead><tbody>${benignRows}</tbody></table>
<p>Targets: every Knockoff attacker within ${report.targets.knockoff} queries, every JBDA attacker within ${report.targets.jbda}, 0 of at least ${report.targets.benignClients} benign clients flagged: <strong>${report.targets.met ? 'met' : 'not met'}</strong>.</p>
</section>
${MARK_END}`;
}

/** detection.json, detection.html, and the section in report.html when that exists (replacing an earlier one). */
export async function writeDetectionReport(dir: string, report: DetectionReport): Promise<{ json: string; html: string; insertedInto?: string }> {
  const json = join(dir, 'detection.json');
  const html = join(dir, 'detection.html');
  await writeFile(json, `${JSON.stringify(report, null, 2)}\n`);
  const section = renderDetectionSection(report);
  await writeFile(
    html,
    `<!doctype html><html><head><meta charset="utf-8"><title>Detection</title><style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}</style></head><body>${section}</body></html>\n`,
  );
  const main = join(dir, 'report.html');
  let page: string;
  try {
    page = await readFile(main, 'utf8');
  } catch {
    return { json, html };
  }
  const start = page.indexOf(MARK_START);
  const end = page.indexOf(MARK_END);
  const without = start >= 0 && end > start ? page.slice(0, start) + page.slice(end + MARK_END.length) : page;
  const at = without.lastIndexOf('</body>');
  await writeFile(main, at >= 0 ? `${without.slice(0, at)}${section}\n${without.slice(at)}` : `${without}${section}\n`);
  return { json, html, insertedInto: main };
}
