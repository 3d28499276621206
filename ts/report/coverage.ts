/**
 * Expert coverage: the tokens each expert of each MoE layer received during calibration, read from what
 * calibration recorded, and the report of it, a self-contained HTML heatmap (no scripts, no external assets)
 * readable from 8 to 256+ experts (the table scrolls under sticky headers), with a colour legend and, per
 * layer, the ids of the experts that saw no token or very few.
 */
import { promises as fs } from 'node:fs'
import * as path from 'node:path'

import { MoeQuantError } from '../errors'
import type { CalibrationSummary } from '../native/contract'

/** One MoE block's coverage: the (token, expert) routings each of its experts received. */
export interface CoverageLayer {
  layer: number
  /** Module path of the MoE block. */
  block: string
  tokens: readonly number[]
}

/** What the report shows: per MoE layer, the routings each expert received, and the calibration's size. */
export interface CoverageInput {
  samples: number
  seqLen: number
  /** Calibration tokens per layer. */
  tokens: number
  layers: readonly CoverageLayer[]
  warnings: readonly string[]
}

/** The coverage of the MoE `blocks` (in their order) as calibration recorded it; a block it has no record of is left out. */
export function coverageLayers(summary: CalibrationSummary, blocks: ReadonlyArray<{ layer: number; block: string }>): CoverageLayer[] {
  return blocks.flatMap(({ layer, block }) => {
    const stats = summary.observers.experts[block]
    return stats ? [{ layer, block, tokens: stats.tokens }] : []
  })
}

/** The report's input: the layers' coverage, the size of the calibration that gave it, the run's warnings. */
export function coverageInput(summary: CalibrationSummary, layers: readonly CoverageLayer[], warnings: readonly string[]): CoverageInput {
  return { samples: summary.samples, seqLen: summary.seq_len, tokens: summary.tokens, layers, warnings }
}

/** The experts that saw no calibration token, per layer that has any. */
export function uncalibratedExperts(layers: readonly CoverageLayer[]): Array<{ layer: number; experts: number[] }> {
  return layers.flatMap(({ layer, tokens }) => {
    const experts = tokens.flatMap((n, e) => (n === 0 ? [e] : []))
    return experts.length > 0 ? [{ layer, experts }] : []
  })
}

/** "12 experts saw no calibration token (layer 1: 5, layer 3: 7)", or undefined when every expert saw one. */
export function uncalibratedSummary(uncalibrated: ReadonlyArray<{ layer: number; experts: readonly number[] }>): string | undefined {
  const count = uncalibrated.reduce((n, l) => n + l.experts.length, 0)
  if (count === 0) return undefined
  return `${count} experts saw no calibration token (${uncalibrated.map((l) => `layer ${l.layer}: ${l.experts.length}`).join(', ')})`
}

/** An expert is "nearly unrouted" below this share of its layer's mean routings per expert. */
export const FEW_TOKENS_SHARE = 0.1

const NO_TOKEN_COLOUR = '#d7301f'

const escape = (text: string): string =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string)

/** The colour at `t` of the scale from few routings (0) to the layer's busiest expert (1). */
const scale = (t: number): string => `hsl(210, 70%, ${Math.round(95 - 60 * t)}%)`

/** Colour of a cell for `tokens` of the layer's busiest `max`, on a log scale so that rare experts show. */
const shade = (tokens: number, max: number): string =>
  tokens === 0 ? NO_TOKEN_COLOUR : scale(max <= 1 ? 1 : Math.log1p(tokens) / Math.log1p(max))

/** The experts of a layer that saw no token, and those under FEW_TOKENS_SHARE of the mean (with counts). */
export function sparseExperts(tokens: readonly number[]): { none: number[]; few: Array<[expert: number, tokens: number]> } {
  const mean = tokens.reduce((a, b) => a + b, 0) / Math.max(1, tokens.length)
  const none: number[] = []
  const few: Array<[number, number]> = []
  tokens.forEach((n, e) => {
    if (n === 0) none.push(e)
    else if (n < FEW_TOKENS_SHARE * mean) few.push([e, n])
  })
  return { none, few }
}

function heatmap(input: CoverageInput): string {
  const experts = Math.max(0, ...input.layers.map((l) => l.tokens.length))
  const showCounts = experts <= 32
  const header = Array.from({ length: experts }, (_, e) => `<th>${e}</th>`).join('')
  const rows = input.layers
    .map((layer) => {
      const max = Math.max(...layer.tokens)
      const total = layer.tokens.reduce((a, b) => a + b, 0)
      const { none, few } = sparseExperts(layer.tokens)
      const cells = layer.tokens
        .map((n, e) => {
          const share = total > 0 ? ((100 * n) / total).toFixed(2) : '0'
          const title = `layer ${layer.layer}, expert ${e}: ${n} routings (${share}%)`
          return `<td style="background:${shade(n, max)}" title="${escape(title)}">${showCounts ? n : ''}</td>`
        })
        .join('')
      return `<tr><th>${layer.layer}</th>${cells}<td class="sum">${none.length}</td><td class="sum few">${few.length}</td></tr>`
    })
    .join('\n')
  return `<div class="scroll"><table><thead><tr><th>layer \\ expert</th>${header}<th>no token</th><th>few</th></tr></thead>
<tbody>
${rows}
</tbody></table></div>`
}

function legend(): string {
  const steps = [0, 0.25, 0.5, 0.75, 1].map((t) => `<span style="background:${scale(t)}"></span>`).join('')
  return `<p class="legend"><span style="background:${NO_TOKEN_COLOUR}"></span>no token (scaled from its own weights and the layer's shared input scale)
&nbsp; 1 routing ${steps} the layer's busiest expert (log scale; hover a cell for its count and share).
"few": under ${FEW_TOKENS_SHARE * 100}% of the layer's mean routings per expert.</p>`
}

function expertLists(input: CoverageInput): string {
  const items = input.layers.flatMap((layer) => {
    const { none, few } = sparseExperts(layer.tokens)
    const parts: string[] = []
    if (none.length > 0) parts.push(`no token: ${none.join(', ')}`)
    if (few.length > 0) parts.push(`few: ${few.map(([e, n]) => `${e} (${n})`).join(', ')}`)
    return parts.length > 0 ? [`<li>layer ${layer.layer} — ${parts.join('; ')}</li>`] : []
  })
  if (items.length === 0) return '<p>Every expert of every layer saw a fair share of the calibration tokens.</p>'
  return `<h2>Experts with no or few tokens</h2>\n<ul>\n${items.join('\n')}\n</ul>`
}

/** Renders the report as HTML text. */
export function renderCoverageReport(model: string, input: CoverageInput): string {
  const uncalibrated = input.layers.reduce((n, l) => n + l.tokens.filter((t) => t === 0).length, 0)
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Expert coverage — ${escape(path.basename(model))}</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
.scroll{max-width:100%;max-height:80vh;overflow:auto;border:1px solid #ddd}
table{border-collapse:separate;border-spacing:1px}
td,th{min-width:10px;height:18px;text-align:center;font-size:11px;padding:0 2px}
th{background:#eee;font-weight:600}
thead th{position:sticky;top:0;z-index:1}
tbody th{position:sticky;left:0}
thead th:first-child{left:0;z-index:2}
td.sum{background:#fff;color:${NO_TOKEN_COLOUR};font-weight:600}
td.few{color:#b26b00}
.legend span{display:inline-block;width:14px;height:14px;vertical-align:middle;margin:0 1px}
</style></head><body>
<h1>Expert coverage during calibration</h1>
<p>Model <code>${escape(model)}</code>: ${input.samples} sequences × ${input.seqLen} tokens = ${input.tokens} tokens per layer.
${uncalibrated} experts saw no token.</p>
${legend()}
${heatmap(input)}
${expertLists(input)}
${input.warnings.map((w) => `<p>⚠ ${escape(w)}</p>`).join('\n')}
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
 * file and is an `E_OUTPUT_WRITE` (disk full, size limit, read-only, quota) or `E_IO` naming the report;
 * `note` is appended to its message.
 */
export async function writeCoverageReport(file: string, model: string, input: CoverageInput, note = ''): Promise<string> {
  const target = path.resolve(file)
  const tmp = `${target}.${process.pid}.tmp`
  try {
    await fs.writeFile(tmp, renderCoverageReport(model, input))
    await fs.rename(tmp, target)
  } catch (error) {
    await fs.rm(tmp, { force: true }).catch(() => {})
    const code = (error as NodeJS.ErrnoException).code ?? ''
    const reason = WRITE_FAILURES[code]
    const message = error instanceof Error ? error.message : String(error)
    throw new MoeQuantError(
      reason ? 'E_OUTPUT_WRITE' : 'E_IO',
      `${target}: cannot write the coverage report${reason ? ` (${reason})` : ''}: ${message}${note}`,
      { file: target },
    )
  }
  return target
}

/** The real path of `target`'s longest existing prefix, with the rest appended (the file may not exist). */
async function resolveExisting(target: string): Promise<string> {
  let existing = target
  const rest: string[] = []
  for (;;) {
    try {
      return path.join(await fs.realpath(existing), ...rest.reverse())
    } catch {
      const parent = path.dirname(existing)
      if (parent === existing) return target
      rest.push(path.basename(existing))
      existing = parent
    }
  }
}

/**
 * Checks, before any work, a coverage-report path given by the user (`option` names it in errors): it must
 * not lie inside the input model directory (whatever links lead there), must not be a directory, and may
 * replace an existing file only with `overwrite`.
 * @throws MoeQuantError `E_OUTPUT_INVALID`
 */
export async function checkReportPath(file: string, { model, overwrite, option }: { model: string; overwrite: boolean; option: string }): Promise<void> {
  const target = path.resolve(file)
  const invalid = (message: string): MoeQuantError => new MoeQuantError('E_OUTPUT_INVALID', `${option}: ${target} ${message}`, { file: target })
  const [resolved, input] = await Promise.all([resolveExisting(target), resolveExisting(path.resolve(model))])
  if (resolved === input || resolved.startsWith(`${input}${path.sep}`)) throw invalid(`is inside the input model directory ${model}; choose another path`)
  const info = await fs.stat(target).catch(() => null)
  if (info?.isDirectory()) throw invalid('is a directory; give a file path')
  if (info && !overwrite) throw invalid('exists; pass overwrite to replace it')
}
