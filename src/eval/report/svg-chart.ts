/**
 * A small SVG line chart: axes with round ticks, one polyline with markers per series, an
 * optional dashed reference line, and a legend. Enough for the trade-off plots; no dependencies.
 */

export interface ChartPoint {
  x: number;
  y: number;
  /** Shown on hover (SVG <title>). */
  label?: string;
  /** Half-height of an error bar drawn around y (e.g. a 95% confidence interval). */
  yError?: number;
}

export interface ChartSeries {
  name: string;
  points: ChartPoint[];
  /** Fixed colour (so one family keeps its colour across plots); default from the palette by position. */
  color?: string;
  /** Dashed line (e.g. a second policy of the same defense). */
  dashed?: boolean;
}

export interface ChartOptions {
  title: string;
  /** A second, smaller title line (the run context). */
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  series: ChartSeries[];
  /** A horizontal dashed line, e.g. the undefended attacker's accuracy. */
  reference?: { y: number; label: string };
  /** Fixed axis ranges; otherwise from the data (y always includes 0..1 when it is a fraction). */
  xDomain?: [number, number];
  yDomain?: [number, number];
  /** Format of the tick labels (default: a short number). */
  xFormat?: (value: number) => string;
  yFormat?: (value: number) => string;
  /** Logarithmic x axis (budgets). */
  xLog?: boolean;
  width?: number;
  height?: number;
}

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];
const MARKERS = ['circle', 'square', 'triangle', 'diamond'] as const;

export function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

/** About `count` round tick values covering [lo, hi] (steps of 1, 2 or 5 × 10^n). */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (hi === lo) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? 10 * magnitude;
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) ticks.push(v);
    }
  }
  return ticks;
}

/** Ids must be unique when several charts are inlined into one page. */
function slug(text: string): string {
  let hash = 0;
  for (let i = 0; i < text.length; i++) hash = (Math.imul(hash, 31) + text.charCodeAt(i)) >>> 0;
  return `${text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .slice(0, 40)}-${hash.toString(36)}`;
}

function shortNumber(value: number): string {
  if (Math.abs(value) >= 1000) return `${Number((value / 1000).toPrecision(3))}k`;
  return String(Number(value.toPrecision(3)));
}

function marker(kind: (typeof MARKERS)[number], x: number, y: number, color: string, title: string): string {
  const t = title ? `<title>${escapeXml(title)}</title>` : '';
  const r = 3.5;
  switch (kind) {
    case 'square':
      return `<rect x="${(x - r).toFixed(1)}" y="${(y - r).toFixed(1)}" width="${2 * r}" height="${2 * r}" fill="${color}">${t}</rect>`;
    case 'triangle':
      return `<polygon points="${x.toFixed(1)},${(y - r - 1).toFixed(1)} ${(x - r - 0.5).toFixed(1)},${(y + r).toFixed(1)} ${(x + r + 0.5).toFixed(1)},${(y + r).toFixed(1)}" fill="${color}">${t}</polygon>`;
    case 'diamond':
      return `<polygon points="${x.toFixed(1)},${(y - r - 1).toFixed(1)} ${(x + r + 1).toFixed(1)},${y.toFixed(1)} ${x.toFixed(1)},${(y + r + 1).toFixed(1)} ${(x - r - 1).toFixed(1)},${y.toFixed(1)}" fill="${color}">${t}</polygon>`;
    default:
      return `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${r}" fill="${color}">${t}</circle>`;
  }
}

/** The data range widened to round tick values. */
function domain(values: number[], fallback: [number, number]): [number, number] {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return fallback;
  let lo = Math.min(...finite);
  let hi = Math.max(...finite);
  if (lo === hi) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const ticks = niceTicks(lo, hi);
  const step = ticks.length > 1 ? ticks[1] - ticks[0] : hi - lo;
  return [Math.floor(lo / step + 1e-9) * step, Math.ceil(hi / step - 1e-9) * step];
}

export function lineChart(options: ChartOptions): string {
  // Wide enough for the longest legend entry (about 6.6 px per character at 12 px).
  const legendWidth = Math.max(150, 40 + Math.ceil(6.6 * Math.max(0, ...options.series.map((s) => s.name.length))));
  const width = options.width ?? 600 + legendWidth;
  const height = options.height ?? 420;
  const margin = { top: options.subtitle ? 52 : 36, right: 16 + legendWidth, bottom: 52, left: 60 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const allPoints = options.series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));

  let [x0, x1] =
    options.xDomain ??
    domain(
      allPoints.map((p) => p.x),
      [0, 1],
    );
  if (options.xLog) {
    x0 = Math.max(x0, 1e-9);
    x1 = Math.max(x1, x0 * 10);
  }
  const yValues = allPoints.map((p) => p.y);
  if (options.reference) yValues.push(options.reference.y);
  const [y0, y1] = options.yDomain ?? domain(yValues, [0, 1]);

  // Points are drawn inside an inset of the frame, so none sits on an axis line.
  const inset = 10;
  const sx = options.xLog
    ? (x: number) => margin.left + inset + ((Math.log10(x) - Math.log10(x0)) / (Math.log10(x1) - Math.log10(x0))) * (plotW - 2 * inset)
    : (x: number) => margin.left + inset + ((x - x0) / (x1 - x0)) * (plotW - 2 * inset);
  const sy = (y: number) => margin.top + plotH - inset - ((y - y0) / (y1 - y0)) * (plotH - 2 * inset);
  const xFormat = options.xFormat ?? shortNumber;
  const yFormat = options.yFormat ?? shortNumber;

  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="12">`,
  );
  parts.push(`<title>${escapeXml(options.subtitle ? `${options.title} (${options.subtitle})` : options.title)}</title>`);
  parts.push(`<rect width="${width}" height="${height}" fill="#fff"/>`);
  parts.push(`<text x="${margin.left}" y="20" font-size="14" font-weight="600">${escapeXml(options.title)}</text>`);
  if (options.subtitle) parts.push(`<text x="${margin.left}" y="38" fill="#555">${escapeXml(options.subtitle)}</text>`);

  const xTicks = options.xLog ? logTicks(x0, x1) : niceTicks(x0, x1);
  const yTicks = niceTicks(y0, y1);
  for (const t of xTicks) {
    const x = sx(t);
    parts.push(`<line x1="${x.toFixed(1)}" y1="${margin.top}" x2="${x.toFixed(1)}" y2="${margin.top + plotH}" stroke="#eee"/>`);
    parts.push(`<text x="${x.toFixed(1)}" y="${margin.top + plotH + 16}" text-anchor="middle" fill="#444">${escapeXml(xFormat(t))}</text>`);
  }
  for (const t of yTicks) {
    const y = sy(t);
    parts.push(`<line x1="${margin.left}" y1="${y.toFixed(1)}" x2="${margin.left + plotW}" y2="${y.toFixed(1)}" stroke="#eee"/>`);
    parts.push(`<text x="${margin.left - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end" fill="#444">${escapeXml(yFormat(t))}</text>`);
  }
  parts.push(`<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#888"/>`);
  parts.push(`<text x="${margin.left + plotW / 2}" y="${height - 12}" text-anchor="middle">${escapeXml(options.xLabel)}</text>`);
  parts.push(`<text transform="translate(16 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeXml(options.yLabel)}</text>`);

  if (options.reference && Number.isFinite(options.reference.y)) {
    const y = sy(options.reference.y);
    parts.push(`<line x1="${margin.left}" y1="${y.toFixed(1)}" x2="${margin.left + plotW}" y2="${y.toFixed(1)}" stroke="#555" stroke-dasharray="5 4"/>`);
    parts.push(`<text x="${margin.left + plotW - 4}" y="${(y - 5).toFixed(1)}" text-anchor="end" fill="#555">${escapeXml(options.reference.label)}</text>`);
  }

  // Clip to the plot area so a point outside a fixed domain does not spill over the axes.
  const clipId = `plot-${slug(options.title)}`;
  parts.push(`<clipPath id="${clipId}"><rect x="${margin.left - 6}" y="${margin.top - 6}" width="${plotW + 12}" height="${plotH + 12}"/></clipPath>`);
  parts.push(`<g clip-path="url(#${clipId})">`);
  options.series.forEach((series, i) => {
    const color = series.color ?? PALETTE[i % PALETTE.length];
    const kind = MARKERS[Math.floor(i / PALETTE.length) % MARKERS.length];
    const points = series.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y) && (!options.xLog || p.x > 0));
    if (points.length > 1) {
      parts.push(
        `<polyline fill="none" stroke="${color}" stroke-width="1.8"${series.dashed ? ' stroke-dasharray="6 3"' : ''} points="${points.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' ')}"/>`,
      );
    }
    for (const p of points) {
      if (p.yError !== undefined && p.yError > 0 && Number.isFinite(p.yError)) {
        const [x, top, bottom] = [sx(p.x).toFixed(1), sy(p.y + p.yError).toFixed(1), sy(p.y - p.yError).toFixed(1)];
        parts.push(
          `<path class="error-bar" d="M${x},${top}V${bottom}M${(sx(p.x) - 3).toFixed(1)},${top}h6M${(sx(p.x) - 3).toFixed(1)},${bottom}h6" stroke="${color}" stroke-width="1" fill="none"/>`,
        );
      }
    }
    for (const p of points)
      parts.push(marker(i < PALETTE.length ? 'circle' : kind, sx(p.x), sy(p.y), color, p.label ?? `${series.name}: (${xFormat(p.x)}, ${yFormat(p.y)})`));
  });
  parts.push('</g>');

  options.series.forEach((series, i) => {
    const color = series.color ?? PALETTE[i % PALETTE.length];
    const kind = MARKERS[Math.floor(i / PALETTE.length) % MARKERS.length];
    const x = width - legendWidth + 4;
    const y = margin.top + 8 + i * 18;
    parts.push(`<line x1="${x}" y1="${y}" x2="${x + 18}" y2="${y}" stroke="${color}" stroke-width="1.8"${series.dashed ? ' stroke-dasharray="6 3"' : ''}/>`);
    parts.push(marker(i < PALETTE.length ? 'circle' : kind, x + 9, y, color, ''));
    parts.push(`<text x="${x + 24}" y="${y + 4}">${escapeXml(series.name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}
