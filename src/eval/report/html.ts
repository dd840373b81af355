/** The self-contained report page: summary, equal-utility comparison, plots inlined, full table. */
import { attackerName } from '../config.js';
import type { RunRecord } from '../records/run-record.js';
import { ATTACKER_NAMES, withInterval, type Plot } from './plots.js';
import { aggregateRuns } from './aggregate.js';
import { adaptiveAgainstRandom, attackerOutcome, bestWithinUtility, comparedWithStrongest, labelsOf, largestBudget, policiesOf } from './selection.js';
import { escapeXml } from './svg-chart.js';
import { REPORT_COLUMNS, reportRows, shortParams, type ReportRow } from './table.js';
import { accuracyText, noChoiceText, settingLabel, worstCaseSummary } from './worst-case.js';

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
    if (
      [
        'victim_accuracy',
        'defender_accuracy',
        'attacker_accuracy',
        'attacker_agreement',
        'top1_change_rate',
        'worst_case_accuracy',
        'query_top1_change_rate',
      ].includes(column)
    )
      return pct(value);
    if (column === 'attacker_accuracy_ci95' || column === 'attacker_agreement_ci95' || column === 'worst_case_ci95') return `± ${(value * 100).toFixed(1)} pt`;
    if (column === 'defender_accuracy_loss') return `${(value * 100).toFixed(2)} pt`;
    if (['l1_mean', 'l1_median', 'answers_l1_raw', 'answers_l1_used', 'restorer_l1_defended', 'restorer_l1_restored'].includes(column)) return value.toFixed(3);
    if (column === 'seconds') return value.toFixed(1);
    return String(value);
  }
  return escapeXml(String(value));
}

function attackerCount(records: readonly RunRecord[]): number {
  return policiesOf(records).length * labelsOf(records).length;
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
      parts.push(`<h3>${escapeXml(attackerName(policy, labels))} (trained on ${labels === 'soft' ? 'the answers' : 'their top-1 labels'}), ${budget} queries</h3>
<table><thead><tr><th>defense</th><th>strongest setting ≤ 1 pt loss</th><th>defender loss</th><th>mean L1</th><th>attacker accuracy (mean ± 95% CI)</th><th>cut vs undefended</th><th>vs strongest (Welch’s t-test, 5%)</th></tr></thead><tbody>${rows.join('')}</tbody></table>`);
    }
  }
  return parts.join('\n');
}

/** The worst case over every attacker, the ranking on it, the recommendation and the top-1 note. */
function worstCaseSection(records: readonly RunRecord[]): string {
  const summary = worstCaseSummary(records, { short: shortParams });
  if (!summary) return '';
  const { columns, rows, choices, verdicts, undefended } = summary;
  const head = columns.map((c) => `<th>${escapeXml(c.name)}</th>`).join('');
  const body = rows
    .map((row) => {
      const cells = columns.map((column) => {
        const cell = row.cells.find((c) => c.name === column.name);
        if (!cell) return '<td>—</td>';
        const text = escapeXml(accuracyText(cell.outcome));
        return `<td>${cell === row.worst ? `<strong>${text}</strong>` : text}</td>`;
      });
      const changed = Number.isNaN(row.defender.top1ChangeRate)
        ? '—'
        : `${pct(row.defender.top1ChangeRate)}${row.queryTop1Changed === undefined ? '' : ` / ${pct(row.queryTop1Changed)}`}`;
      const loss = Number.isNaN(row.defender.accuracyLoss) ? '—' : `${(row.defender.accuracyLoss * 100).toFixed(2)} pt`;
      return `<tr><td>${escapeXml(settingLabel(row, shortParams))}</td><td>${loss}</td><td>${Number.isNaN(row.defender.l1Mean) ? '—' : row.defender.l1Mean.toFixed(3)}</td><td>${changed}</td>${cells.join('')}<td><strong>${escapeXml(accuracyText(row.worst.outcome))}</strong></td><td>${escapeXml(row.worst.name)}</td></tr>`;
    })
    .join('\n');
  const ranking = choices
    .filter((c) => c.family !== 'none')
    .map((choice) => {
      if (!choice.best) return `<tr><td>${escapeXml(choice.family)}</td><td colspan="6">${escapeXml(noChoiceText(choice))}</td></tr>`;
      const b = choice.best;
      const cut = undefended ? `${((undefended.worst.outcome.accuracy - b.worst.outcome.accuracy) * 100).toFixed(1)} pt` : '';
      return `<tr><td>${escapeXml(choice.family)}</td><td>${escapeXml(shortParams(b.params) || '—')}</td><td>${(b.defender.accuracyLoss * 100).toFixed(2)} pt</td><td>${escapeXml(accuracyText(b.worst.outcome))}</td><td>${escapeXml(b.worst.name)}</td><td>${cut}</td><td>${escapeXml(verdicts.get(choice.family) ?? '—')}</td></tr>`;
    })
    .join('');
  return `<h2>What does the best attacker still get? The worst case over ${columns.length} attacker${columns.length === 1 ? '' : 's'}, ${summary.budget} queries</h2>
<p>Each cell: attacker accuracy on the victim’s test set (mean ± 95% CI over the attacker seeds); the worst case (in bold) is the strongest attacker against that setting. Top-1 changed: share of the test answers whose top-1 label the defense changed, and of the attacker’s own queries where the evaluation measured them.</p>
<div class="wide"><table><thead><tr><th>defense</th><th>defender loss</th><th>mean L1</th><th>top-1 changed (test / queries)</th>${head}<th>worst case</th><th>by</th></tr></thead><tbody>
${body}
</tbody></table></div>
<h3>Ranking on the worst case: each defense’s setting within 1 point of defender accuracy that leaves the best attacker weakest</h3>
<table><thead><tr><th>defense</th><th>setting</th><th>defender loss</th><th>worst case</th><th>by</th><th>cut vs undefended worst case</th><th>vs strongest (Welch’s t-test, 5%)</th></tr></thead><tbody>${ranking}</tbody></table>
<p class="recommendation"><strong>${escapeXml(summary.recommendation)}</strong></p>
<p>${escapeXml(summary.top1Note)}</p>
${recoverySection(records)}`;
}

/** What the adaptive attackers got back: answers against the clean ones before and after their processing, and the restorer's own estimate. */
function recoverySection(records: readonly RunRecord[]): string {
  const budget = largestBudget(records);
  const adaptive = records.filter(
    (r) =>
      r.budget === budget &&
      (r.restorer || (r.answerQuality && (r.policy === 'smoothing' || r.policy === 'restorer' || r.policy === 'inversion' || r.policy === 'restorer-jbtop3'))),
  );
  if (adaptive.length === 0) return '';
  const num = (v: number | undefined, digits = 3) => (v === undefined ? '—' : v.toFixed(digits));
  const rate = (v: number | undefined) => (v === undefined ? '—' : pct(v));
  const rows = adaptive.map((r) => {
    const q = r.answerQuality;
    const s = r.restorer;
    return `<tr><td>${escapeXml(settingLabel({ family: r.defense, params: r.params }, shortParams))}</td><td>${escapeXml(r.attacker ?? r.policy)}</td><td>${num(q?.rawL1)} → ${num(q?.usedL1)}</td><td>${rate(q?.rawTop1Changed)} → ${rate(q?.usedTop1Changed)}</td><td>${s ? `${num(s.defendedL1)} → ${num(s.restoredL1)} (${Math.round(s.heldOut)} held out, ${Math.round(s.shadowQueries)} shadow queries)` : '—'}</td></tr>`;
  });
  return `<h3>What the adaptive attackers recovered</h3>
<p>Against the victim’s clean answers to the same queries (measured by the evaluation, never seen by the attacker): mean L1 and top-1 change rate of the answers as received → as trained on (averaged, restored or inverted). The restorer’s own estimate: mean L1 to the clean shadow answers on held-out shadow queries, defended → restored.</p>
<table><thead><tr><th>defense</th><th>attacker</th><th>L1 to clean</th><th>top-1 changed</th><th>restorer, held-out shadow L1</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

/** Adaptive against random, where the grid measured both (empty otherwise). */
function policySection(records: readonly RunRecord[]): string {
  const comparisons = adaptiveAgainstRandom(records);
  if (comparisons.length === 0) return '';
  const rows = comparisons.map(
    (c) =>
      `<tr><td>${escapeXml(c.spec)}</td><td>${c.budget}</td><td>${escapeXml(ATTACKER_NAMES[c.labels])}</td><td>${escapeXml(withInterval(c.random))}</td><td>${escapeXml(withInterval(c.adaptive))}</td><td>${escapeXml(c.verdict)}</td></tr>`,
  );
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
${worstCaseSection(records)}
<h2>At equal utility, attacker by attacker: each defense’s strongest setting within 1 point of defender accuracy</h2>
${attackerCount(records) > 2 ? `<details><summary>${attackerCount(records)} attackers: one table each</summary>\n${comparisonTable(records)}\n</details>` : comparisonTable(records)}
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
