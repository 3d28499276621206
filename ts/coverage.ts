/**
 * The expert-coverage report: a self-contained HTML heatmap (no scripts, no external assets) of the tokens
 * each expert of each MoE layer received during calibration, with the experts that saw none marked.
 */
import { promises as fs } from 'node:fs'
import * as path from 'node:path'

import type { CalibrationResult } from './calibrate'
import { MoeQuantError } from './errors'

const escape = (text: string): string =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string)

/** Colour for a share of the layer's busiest expert, on a log scale so that rare experts stay visible. */
function shade(tokens: number, max: number): string {
  if (tokens === 0) return '#d7301f'
  const t = max <= 1 ? 1 : Math.log1p(tokens) / Math.log1p(max)
  const lightness = Math.round(95 - 60 * t)
  return `hsl(210, 70%, ${lightness}%)`
}

/** Renders the report as HTML text. */
export function renderCoverageReport(model: string, result: CalibrationResult): string {
  const experts = Math.max(0, ...result.experts.map((l) => l.tokens.length))
  const showCounts = experts <= 32
  const header = Array.from({ length: experts }, (_, e) => `<th>${e}</th>`).join('')
  const rows = result.experts
    .map((layer) => {
      const max = Math.max(...layer.tokens)
      const total = layer.tokens.reduce((a, b) => a + b, 0)
      const cells = layer.tokens
        .map((n, e) => {
          const share = total > 0 ? ((100 * n) / total).toFixed(2) : '0'
          const title = `layer ${layer.layer}, expert ${e}: ${n} routings (${share}%)`
          return `<td style="background:${shade(n, max)}" title="${escape(title)}">${showCounts ? n : ''}</td>`
        })
        .join('')
      return `<tr><th>${layer.layer}</th>${cells}<td class="sum">${layer.uncalibrated.length}</td></tr>`
    })
    .join('\n')
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Expert coverage — ${escape(path.basename(model))}</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}
td,th{border:1px solid #fff;min-width:${showCounts ? 28 : 10}px;height:18px;text-align:center;font-size:11px;padding:0 2px}
th{background:#eee;font-weight:600}
td.sum{background:#fff;color:#d7301f;font-weight:600}
.legend span{display:inline-block;width:14px;height:14px;vertical-align:middle;margin:0 4px}
</style></head><body>
<h1>Expert coverage during calibration</h1>
<p>Model <code>${escape(model)}</code>: ${result.samples} sequences × ${result.seqLen} tokens = ${result.tokens} tokens.
${result.uncalibratedExperts} experts saw no token.</p>
<p class="legend">Cells: (token, expert) routings per expert, darker = more (log scale);
<span style="background:#d7301f"></span>no token (scaled from its own weights and the layer's shared input scale).</p>
<table><thead><tr><th>layer \\ expert</th>${header}<th>no token</th></tr></thead>
<tbody>
${rows}
</tbody></table>
${result.warnings.map((w) => `<p>⚠ ${escape(w)}</p>`).join('\n')}
</body></html>
`
}

/** Write failures caused by the file system's state, as the native writer names them (`E_OUTPUT_WRITE`). */
const WRITE_FAILURES: Record<string, string> = {
  ENOSPC: 'the disk is full',
  EFBIG: 'a file-size limit was reached',
  EROFS: 'the filesystem is read-only',
  EDQUOT: 'the disk quota is exceeded',
}

/**
 * Writes the report to `file` (atomically) and returns its absolute path. A failure removes the temporary
 * file and is an `E_OUTPUT_WRITE` (disk full, size limit, read-only, quota) or `E_IO` naming the report.
 */
export async function writeCoverageReport(file: string, model: string, result: CalibrationResult): Promise<string> {
  const target = path.resolve(file)
  const tmp = `${target}.${process.pid}.tmp`
  try {
    await fs.writeFile(tmp, renderCoverageReport(model, result))
    await fs.rename(tmp, target)
  } catch (error) {
    await fs.rm(tmp, { force: true }).catch(() => {})
    const code = (error as NodeJS.ErrnoException).code ?? ''
    const reason = WRITE_FAILURES[code]
    const message = error instanceof Error ? error.message : String(error)
    throw new MoeQuantError(
      reason ? 'E_OUTPUT_WRITE' : 'E_IO',
      `${target}: cannot write the coverage report${reason ? ` (${reason})` : ''}: ${message}`,
      { file: target },
    )
  }
  return target
}
