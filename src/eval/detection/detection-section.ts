/**
 * The detection section of the report: per attacker, the queries until each detector flags and the
 * knockoff's accuracy with the escalation; per detector, the benign false-positive rate. Written as
 * detection.html and, when the grid's report.html is in the same folder, inserted into it.
 */
import { sectionMarkers, writeSectionFiles } from '../report/section-file.js';
import { escapeXml } from '../report/svg-chart.js';
import type { DetectionReport } from './run.js';

const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
const queries = (v: number | null | undefined) => (v === null || v === undefined ? 'not flagged' : String(v));
const MARKS = sectionMarkers('detection');

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
  return `${MARKS.start}
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
${MARKS.end}`;
}

/** detection.json, detection.html, and the section in report.html when that exists (replacing an earlier one). */
export function writeDetectionReport(dir: string, report: DetectionReport): Promise<{ json: string; html: string; insertedInto?: string }> {
  return writeSectionFiles(dir, { name: 'detection', title: 'Detection', width: '70em', section: renderDetectionSection(report), figures: report });
}
