/**
 * The report section of `msd eval --detection --thieves`: per thief scenario, what it got (clean,
 * defended, refused), which detector acted first and when, the knockoff's accuracy from what it
 * received against the same queries answered undefended, and the benign clients' cost. Written as
 * population.json and population.html and, when the grid's report.html is in the folder, inserted
 * into it (replacing an earlier one).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PopulationReport } from './population-run.js';

const MARK_START = '<!-- population section -->';
const MARK_END = '<!-- /population section -->';

const escapeHtml = (text: string): string => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
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
      return `<tr><td>${escapeHtml(t.scenario)}</td><td>${t.attackQueries}${t.coverQueries ? ` + ${t.coverQueries}` : ''}</td><td>${t.identitiesUsed}</td><td>${t.answers.clean}</td><td>${t.answers.cleanBeforeFirstAction}</td><td>${t.answers.defended}</td><td>${t.answers.refused}</td><td>${first || 'none'}</td><td>${t.knockoffAccuracy ? pct(t.knockoffAccuracy.undefended) : '—'}</td><td>${t.knockoffAccuracy ? pct(t.knockoffAccuracy.withDetection) : '—'}</td><td>${b.top1Changed} / ${b.answers} (${pct(b.top1ChangedShare)}); ${b.changed} changed; ${b.refusedClients} refused; alarms started ${b.alarmStarts.all + b.alarmStarts.young}</td><td>${escapeHtml(target)}</td></tr>`;
    })
    .join('');
  const cal = report.population.calibration;
  return `${MARK_START}
<section id="population">
<h2>Thieves with many identities: detection above the client</h2>
<p>Each scenario ran against a fresh endpoint (per-client detection, cohorts by tenant, population detection over all and young identities, fingerprints; probation tier ${escapeHtml(report.probationTier)}, which keeps top-1) with the same ${report.benignSettings.clients} benign clients (${report.benignSettings.minQueries}–${report.benignSettings.maxQueries} queries, ten tenants) interleaved in time. The thief sends ${report.requestRows} of its own rows per request over ${report.spanHours} h (longer when slow), plus cover rows when diluting. Population thresholds from held-out benign answers: unsure share ${pct(cal.benignRate)} benign, flagged above ${pct(report.population.options.ood?.maxRate ?? 0)}. HODA ${report.hoda.enabled ? `on (${report.hoda.checkpoints} checkpoints)` : 'off'}. "First action": the thief's queries answered when each detector first acted. The knockoff "undefended" is trained on the same queries answered without any defense.</p>
<table><thead><tr><th>scenario</th><th>queries (+ cover)</th><th>identities used</th><th>clean answers</th><th>clean before first action</th><th>defended</th><th>refused</th><th>first action</th><th>knockoff, undefended</th><th>knockoff, with detection</th><th>benign: top-1 changed; changed; refused clients</th><th>target</th></tr></thead><tbody>${rows}</tbody></table>
<p>Targets: a Sybil Knockoff thief (10 000 queries over 200 identities) at most ${report.targets.sybilClean} clean answers, ${report.targets.cohortClean} in one cohort; dilution at 50% detected; at most ${pct(report.targets.benignTop1Changed)} of benign answers changed in top-1, ${report.targets.benignRefused} benign clients refused: <strong>${report.targets.met ? 'met' : 'not met'}</strong>.</p>
</section>
${MARK_END}`;
}

export async function writePopulationReport(dir: string, report: PopulationReport): Promise<{ json: string; html: string; insertedInto?: string }> {
  const json = join(dir, 'population.json');
  const html = join(dir, 'population.html');
  await writeFile(json, `${JSON.stringify(report, null, 2)}\n`);
  const section = renderPopulationSection(report);
  await writeFile(
    html,
    `<!doctype html><html><head><meta charset="utf-8"><title>Detection above the client</title><style>body{font-family:sans-serif;max-width:90em;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;vertical-align:top}</style></head><body>${section}</body></html>\n`,
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
