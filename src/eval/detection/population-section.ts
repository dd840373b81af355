/**
 * The report section of `msd eval --detection --thieves`: per thief scenario, what it got (clean,
 * defended, refused), which detector acted first and when, the knockoff's accuracy from what it
 * received against the same queries answered undefended, and the benign clients' cost. Written as
 * population.json and population.html and, when the grid's report.html is in the folder, inserted
 * into it (replacing an earlier one).
 */
import { sectionMarkers, writeSectionFiles } from '../report/section-file.js';
import { escapeXml } from '../report/svg-chart.js';
import type { PopulationReport } from './population-run.js';

const MARKS = sectionMarkers('population');
const pct = (v: number) => `${(v * 100).toFixed(1)}%`;

export function renderPopulationSection(report: PopulationReport): string {
  const rows = report.thieves
    .map((t) => {
      const first = Object.entries(t.firstAction)
        .sort((a, b) => a[1] - b[1])
        .map(
          ([d, q]) =>
            `${d}${t.populationFlaggedBy[d.replace('population:', '')] && d.startsWith('population:') ? ` (${t.populationFlaggedBy[d.replace('population:', '')].join(', ')})` : ''} ${q}`,
        )
        .join('<br>');
      const target = t.target ? `${t.target.what}: ${t.target.met ? 'met' : 'missed'}` : '—';
      const b = t.benign;
      return `<tr><td>${escapeXml(t.scenario)}</td><td>${t.attackQueries}${t.coverQueries ? ` + ${t.coverQueries}` : ''}</td><td>${t.identitiesUsed}</td><td>${t.answers.clean}</td><td>${t.answers.cleanBeforeFirstAction}</td><td>${t.answers.defended}</td><td>${t.answers.refused}</td><td>${first || 'none'}</td><td>${t.knockoffAccuracy ? pct(t.knockoffAccuracy.undefended) : '—'}</td><td>${t.knockoffAccuracy ? pct(t.knockoffAccuracy.withDetection) : '—'}</td><td>${b.top1Changed} / ${b.answers} (${pct(b.top1ChangedShare)}); ${b.changed} changed; ${b.refusedClients} refused; alarms started ${b.alarmStarts.all + b.alarmStarts.young}</td><td>${escapeXml(target)}</td></tr>`;
    })
    .join('');
  const cal = report.population.calibration;
  return `${MARKS.start}
<section id="population">
<h2>Thieves with many identities: detection above the client</h2>
<p>Each scenario ran against a fresh endpoint (per-client detection, cohorts by tenant, population detection over all and young identities, fingerprints; probation tier ${escapeXml(report.probationTier)}, which keeps top-1) with the same ${report.benignSettings.clients} benign clients (${report.benignSettings.minQueries}–${report.benignSettings.maxQueries} queries, ten tenants) interleaved in time. The thief sends ${report.requestRows} of its own rows per request over ${report.spanHours} h (longer when slow), plus cover rows when diluting. Population thresholds from held-out benign answers: unsure share ${pct(cal.benignRate)} benign, flagged above ${pct(report.population.options.ood?.maxRate ?? 0)}. HODA ${report.hoda.enabled ? `on (${report.hoda.checkpoints} checkpoints)` : 'off'}. "First action": the thief's queries answered when each detector first acted. The knockoff "undefended" is trained on the same queries answered without any defense.</p>
<table><thead><tr><th>scenario</th><th>queries (+ cover)</th><th>identities used</th><th>clean answers</th><th>clean before first action</th><th>defended</th><th>refused</th><th>first action</th><th>knockoff, undefended</th><th>knockoff, with detection</th><th>benign: top-1 changed; changed; refused clients</th><th>target</th></tr></thead><tbody>${rows}</tbody></table>
<p>Targets: a Sybil Knockoff thief (10 000 queries over 200 identities) at most ${report.targets.sybilClean} clean answers, ${report.targets.cohortClean} in one cohort; dilution at 50% detected; at most ${pct(report.targets.benignTop1Changed)} of benign answers changed in top-1, ${report.targets.benignRefused} benign clients refused: <strong>${report.targets.met ? 'met' : 'not met'}</strong>.</p>
</section>
${MARKS.end}`;
}

export function writePopulationReport(dir: string, report: PopulationReport): Promise<{ json: string; html: string; insertedInto?: string }> {
  return writeSectionFiles(dir, {
    name: 'population',
    title: 'Detection above the client',
    width: '90em',
    section: renderPopulationSection(report),
    figures: report,
  });
}
