/**
 * A report section written on its own and into the grid's report: NAME.json (the figures),
 * NAME.html (the section as a page) and, when report.html is in the same folder, the section inserted
 * before its </body> between two markers (an earlier one replaced, so a rerun leaves one).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface SectionFile {
  /** File name without extension, also the marker's name: "detection" → detection.json, <!-- detection section -->. */
  name: string;
  title: string;
  /** The page's max width, e.g. "70em". */
  width: string;
  /** The rendered section, from markers(name).start to markers(name).end. */
  section: string;
  /** Written as NAME.json. */
  figures: unknown;
}

/** The comments that enclose a section in report.html. */
export const sectionMarkers = (name: string) => ({ start: `<!-- ${name} section -->`, end: `<!-- /${name} section -->` });

export async function writeSectionFiles(dir: string, file: SectionFile): Promise<{ json: string; html: string; insertedInto?: string }> {
  const json = join(dir, `${file.name}.json`);
  const html = join(dir, `${file.name}.html`);
  await writeFile(json, `${JSON.stringify(file.figures, null, 2)}\n`);
  await writeFile(
    html,
    `<!doctype html><html><head><meta charset="utf-8"><title>${file.title}</title><style>body{font-family:sans-serif;max-width:${file.width};margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;vertical-align:top}</style></head><body>${file.section}</body></html>\n`,
  );
  const main = join(dir, 'report.html');
  let page: string;
  try {
    page = await readFile(main, 'utf8');
  } catch {
    return { json, html };
  }
  const { start: mark, end: endMark } = sectionMarkers(file.name);
  const start = page.indexOf(mark);
  const end = page.indexOf(endMark);
  const without = start >= 0 && end > start ? page.slice(0, start) + page.slice(end + endMark.length) : page;
  const at = without.lastIndexOf('</body>');
  await writeFile(main, at >= 0 ? `${without.slice(0, at)}${file.section}\n${without.slice(at)}` : `${without}${file.section}\n`);
  return { json, html, insertedInto: main };
}
