/**
 * The Grafana dashboard and the Prometheus alerting rules in deploy/ name only metrics the project
 * exports (as a fresh registry lists them), and cover what an operator watches. promtool, where it
 * is installed, checks the rules' syntax too.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { CLIENT_OUTCOMES, createServingMetrics, SERVICE_ERROR_OUTCOMES } from '../../src/server/metrics.js';
import { registerAllShadowMetrics } from '../../src/server/shadow/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const DASHBOARD = `${root}deploy/grafana/msd-dashboard.json`;
const ALERTS = `${root}deploy/prometheus/msd-alerts.yml`;

/** Every series name the serving metrics (the shadow attacker's too) expose: histograms as _bucket, _sum and _count. */
async function exportedNames(): Promise<Set<string>> {
  const metrics = createServingMetrics();
  registerAllShadowMetrics(metrics.registry, metrics.prefix);
  const names = new Set<string>();
  for (const metric of await metrics.registry.getMetricsAsJSON()) {
    if (String(metric.type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(metric.name + suffix);
    else names.add(metric.name);
  }
  return names;
}

/**
 * The metric names an expression reads: what is left after removing strings, label matchers,
 * ranges and grouping clauses, as identifiers not called as functions, not operators or numbers.
 */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const keywords = new Set(['and', 'or', 'unless', 'bool', 'offset']);
  return [...bare.matchAll(/(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()/g)].map((m) => m[1]).filter((n) => !keywords.has(n) && !/^(e|inf|nan)$/i.test(n));
}

function balanced(expr: string): boolean {
  const pairs: Record<string, string> = { ')': '(', '}': '{', ']': '[' };
  const stack: string[] = [];
  for (const c of expr.replace(/"(?:[^"\\]|\\.)*"/g, '')) {
    if ('({['.includes(c)) stack.push(c);
    else if (c in pairs && stack.pop() !== pairs[c]) return false;
  }
  return stack.length === 0;
}

const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: { title: string; type: string; targets?: { expr: string }[] }[] };
// Row panels hold no queries.
const dashboardExprs = dashboard.panels.flatMap((p) =>
  (p.targets ?? []).map((t) => ({ where: `panel "${p.title}"`, expr: t.expr.replace(/\$__rate_interval/g, '5m').replace(/\$defense/g, '.*') })),
);
const rules = (
  parse(readFileSync(ALERTS, 'utf8')) as {
    groups: { rules: { alert: string; expr: string; for?: string; labels?: { severity?: string }; annotations?: { summary?: string } }[] }[];
  }
).groups.flatMap((g) => g.rules);

describe('deploy/: dashboard and alerts', () => {
  it('the metric-name reader finds names and ignores functions and labels', () => {
    assert.deepEqual(metricNames('histogram_quantile(0.9, sum by (le, defense) (rate(msd_x_bucket{defense=~"a|b"}[5m]))) / max(up)'), ['msd_x_bucket', 'up']);
  });

  for (const [what, exprs] of [
    ['dashboard', dashboardExprs],
    ['alerting rules', rules.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr }))],
  ] as const) {
    it(`every expression of the ${what} reads only exported msd_ metrics`, async () => {
      const exported = await exportedNames();
      assert.ok(exprs.length > 0);
      for (const { where, expr } of exprs) {
        const names = metricNames(expr);
        assert.ok(names.length > 0, `${where}: no metric in ${expr}`);
        for (const name of names) assert.ok(exported.has(name), `${where}: ${name} is not exported (exported: ${[...exported].join(', ')})`);
        assert.ok(balanced(expr), `${where}: unbalanced brackets in ${expr}`);
      }
    });
  }

  it('the dashboard shows outcomes, L1, top-1 changes, latency, utility loss and attacker accuracy', () => {
    const all = dashboardExprs.map((e) => e.expr).join('\n');
    for (const needed of [
      'msd_requests_total',
      'msd_perturbation_l1_bucket',
      'msd_top1_changes_total',
      'msd_defense_duration_seconds_bucket',
      'msd_utility_loss_ratio',
      'msd_attacker_accuracy_ratio',
    ]) {
      assert.ok(all.includes(needed), `no panel reads ${needed}`);
    }
  });

  it('the dashboard has a trade-off row: the shadow knockoffs’ accuracies against the live utility loss', () => {
    const row = dashboard.panels.findIndex((p) => p.type === 'row' && /trade-off/i.test(p.title));
    assert.ok(row >= 0, 'no trade-off row');
    const below = dashboard.panels
      .slice(row + 1)
      .flatMap((p) => (p.targets ?? []).map((t) => t.expr))
      .join('\n');
    for (const needed of [
      'msd_shadow_attacker_accuracy_ratio',
      'msd_shadow_protection_ratio',
      'msd_shadow_protection_min_ratio',
      'msd_shadow_attacker_agreement_ratio',
      'msd_shadow_training_rows',
      'msd_top1_changes_total',
      'msd_perturbation_l1_sum',
      'msd_shadow_defended_accuracy_ratio',
    ]) {
      assert.ok(below.includes(needed), `the trade-off row reads no ${needed}`);
    }
  });

  it('the alerts cover error rate, fail-closed answers, top-1 changes, latency and the shadow’s protection, each with a severity and a summary', () => {
    const byName = new Map(rules.map((r) => [r.alert, r]));
    assert.deepEqual([...byName.keys()].sort(), [
      'MsdClientErrorsHigh',
      'MsdDefenseLatencyHigh',
      'MsdFailClosedAnswers',
      'MsdHighErrorRate',
      'MsdShadowProtectionLow',
      'MsdShadowRoundsFailing',
      'MsdTop1ChangeRateHigh',
    ]);
    // The threshold is the owner's (a gauge they set), not a number written in the rule.
    assert.match(byName.get('MsdShadowProtectionLow')!.expr, /msd_shadow_protection_ratio.*<.*msd_shadow_protection_min_ratio/);
    for (const rule of rules) {
      assert.match(rule.for ?? '', /^\d+[smh]$/, `${rule.alert}: for`);
      assert.ok(['info', 'warning', 'critical'].includes(rule.labels?.severity ?? ''), `${rule.alert}: severity`);
      assert.ok(rule.annotations?.summary, `${rule.alert}: summary`);
    }
    assert.match(byName.get('MsdFailClosedAnswers')!.expr, /defense_failed/);
    assert.match(byName.get('MsdDefenseLatencyHigh')!.expr, /msd_defense_duration_seconds_bucket/);
  });

  it('the error-rate alert and panel count the service’s failures only, never client mistakes or refusals', () => {
    const outcomesIn = (expr: string): string[] => (/outcome=~"([^"]+)"/.exec(expr)?.[1] ?? '').split('|').sort();
    const panel = dashboardExprs.find((e) => e.expr.includes('upstream_unavailable'));
    for (const expr of [rules.find((r) => r.alert === 'MsdHighErrorRate')!.expr, panel?.expr ?? '']) {
      assert.deepEqual(outcomesIn(expr), [...SERVICE_ERROR_OUTCOMES].sort(), expr);
      for (const outcome of CLIENT_OUTCOMES) assert.ok(!outcomesIn(expr).includes(outcome), `${outcome} counted as an error in ${expr}`);
    }
    assert.deepEqual(outcomesIn(rules.find((r) => r.alert === 'MsdClientErrorsHigh')!.expr), [...CLIENT_OUTCOMES].sort());
  });

  // npm test installs promtool first (scripts/test-tools.mjs): a missing one fails here, it is never skipped.
  it('promtool accepts the rules', () => {
    const result = spawnSync('promtool', ['check', 'rules', ALERTS], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stdout + result.stderr);
  });
});
