/** The self-contained report page: summary, equal-utility comparison, plots inlined, full table. */
import type { RunRecord } from '../results.js';
import { ATTACKER_NAMES, withInterval, type Plot } from './plots.js';
import { aggregateRuns } from './aggregate.js';
import { adaptiveAgainstRandom, attackerOutcome, bestWithinUtility, comparedWithStrongest, labelsOf, largestBudget, policiesOf } from './selection.js';
import { escapeXml } from './svg-chart.js';
import { REPORT_COLUMNS, reportRows, shortParams, type ReportRow } from './table.js';

export interface ReportMeta {
  name: string;
  victim: string;
  world: string;
  seed: number;
  generatedAt: string;
  /** Free text lines, e.g. the backend and the machine. */
  notes?: string[];
}

const pct = (v: number) => `${(v * 100).toFixed(1)}%`;

function cell(column: keyof ReportRow, value: unknown): string {
  if (typeof value === 'number') {
    if (['victim_accuracy', 'defender_accuracy', 'attacker_accuracy', 'attacker_agreement', 'top1_change_rate'].includes(column)) return pct(value);
    if (column === 'attacker_accuracy_ci95' || column === 'attacker_agreement_ci95') return `± ${(value * 100).toFixed(1)} pt`;
    if (column === 'defender_accuracy_loss') return `${(value * 100).toFixed(2)} pt`;
    if (column === 'l1_mean' || column === 'l1_median') return value.toFixed(3);
    if (column === 'seconds') return value.toFixed(1);
    return String(value);
  }
  return escapeXml(String(value));
}

function comparisonTable(records: readonly RunRecord[]): string {
  const budget = largestBudget(records);
  const parts: string[] = [];
  for (const policy of policiesOf(records)) {
    for (const labels of labelsOf(records)) {
      const none = records.find((r) => r.defense === 'none' && r.policy === policy && r.budget === budget);
      const undefended = none && attackerOutcome(none, labels)?.accuracy;
      const choices = bestWithinUtility(records, policy, budget, labels);
      const verdicts = comparedWithStrongest(choices, labels);
      const rows = choices.map((choice) => {
        if (!choice.best) return `<tr><td>${escapeXml(choice.family)}</td><td colspan="6">no setting within 1 point (${choice.settings} measured)</td></tr>`;
        const b = choice.best;
        const acc = attackerOutcome(b, labels)!.accuracy;
        const cut = undefended === undefined ? '' : `${((undefended - acc) * 100).toFixed(1)} pt`;
        return `<tr><td>${escapeXml(choice.family)}</td><td>${escapeXml(shortParams(b.params) || '—')}</td><td>${(b.defender.accuracyLoss * 100).toFixed(2)} pt</td><td>${b.defender.l1Mean.toFixed(3)}</td><td>${escapeXml(withInterval(attackerOutcome(b, labels)!))}</td><td>${cut}</td><td>${escapeXml(verdicts.get(choice.family) ?? '—')}</td></tr>`;
      });
      parts.push(`<h3>${escapeXml(ATTACKER_NAMES[labels])}, ${policy} policy, ${budget} queries</h3>
<table><thead><tr><th>defense</th><th>strongest setting ≤ 1 pt loss</th><th>defender loss</th><th>mean L1</th><th>attacker accuracy (mean ± 95% CI)</th><th>cut vs undefended</th><th>vs strongest (Welch’s t-test, 5%)</th></tr></thead><tbody>${rows.join('')}</tbody></table>`);
    }
  }
  return parts.join('\n');
}

/** Adaptive against random, where the grid measured both (empty otherwise). */
function policySection(records: readonly RunRecord[]): string {
  const comparisons = adaptiveAgainstRandom(records);
  if (comparisons.length === 0) return '';
  const rows = comparisons.map((c) => `<tr><td>${escapeXml(c.spec)}</td><td>${c.budget}</td><td>${escapeXml(ATTACKER_NAMES[c.labels])}</td><td>${escapeXml(withInterval(c.random))}</td><td>${escapeXml(withInterval(c.adaptive))}</td><td>${escapeXml(c.verdict)}</td></tr>`);
  return `<h2>Does the adaptive attacker beat random sampling?</h2>
<p>The attacker’s accuracy with each query policy, same setting and budget; Welch’s two-sided t-test at 5% on the per-seed accuracies. Knockoff Nets’ published gain from the adaptive policy comes from pools whose classes overlap the victim’s domain; where it is tied or weaker here, this pool does not give it that.</p>
<table><thead><tr><th>defense</th><th>budget</th><th>attacker</th><th>random</th><th>adaptive</th><th>verdict</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

export function renderHtml(seeded: readonly RunRecord[], plots: readonly Plot[], meta: ReportMeta): string {
  const records = aggregateRuns(seeded);
  const rows = reportRows(records);
  const seeds = Math.max(...records.map((r) => r.seeds ?? 1));
  const arch = [...new Set(records.map((r) => r.knockoffArch).filter(Boolean))].join(', ');
  const victimAccuracy = records[0]?.victimAccuracy;
  const head = REPORT_COLUMNS.map((c) => `<th>${escapeXml(c.replace(/_/g, ' '))}</th>`).join('');
  const body = rows.map((row) => `<tr>${REPORT_COLUMNS.map((c) => `<td>${cell(c, row[c])}</td>`).join('')}</tr>`).join('\n');
  const figures = plots.map((p) => `<figure>${p.svg}<figcaption>${escapeXml(p.file)}</figcaption></figure>`).join('\n');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Model stealing evaluation: ${escapeXml(meta.name)}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.wide { overflow-x: auto; } figure { display: inline-block; margin: 8px; } figcaption { color: #666; font-size: 12px; }
.meta { color: #555; }
</style>
</head>
<body>
<h1>Defenses against model stealing: ${escapeXml(meta.name)}</h1>
<p class="meta">Victim: ${escapeXml(meta.victim)}${victimAccuracy === undefined ? '' : ` (test accuracy ${pct(victimAccuracy)})`} · attacker’s images: ${meta.world === 'open' ? 'open world (another dataset)' : meta.world === 'closed' ? 'closed world (held-out images of the victim’s training split)' : 'the owner’s transfer set'} · seed ${meta.seed} · ${seeded.length} runs (${records.length} settings × up to ${seeds} attacker seed${seeds === 1 ? '' : 's'}; means with 95% Student-t intervals) · attacker: ${escapeXml([...new Set(records.map((r) => r.attackerFamily ?? 'knockoff'))].join(', '))}${arch ? ` (knockoff architecture ${escapeXml(arch)})` : ''} · generated ${escapeXml(meta.generatedAt)}</p>
${(meta.notes ?? []).map((n) => `<p class="meta">${escapeXml(n)}</p>`).join('\n')}
<p>Every answer went through the defended HTTP endpoint. <em>Defender</em> columns measure the defended answers on the victim’s test set against the undefended ones; <em>attacker</em> columns measure the knockoff trained on the defended answers, on the same test set (agreement: same top-1 as the undefended victim).</p>
<h2>At equal utility: each defense’s strongest setting within 1 point of defender accuracy</h2>
${comparisonTable(records)}
${policySection(records)}
<h2>Plots</h2>
${figures}
<h2>All runs</h2>
<div class="wide"><table><thead><tr>${head}</tr></thead><tbody>
${body}
</tbody></table></div>
</body>
</html>
`;
}
