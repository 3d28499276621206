/** `moe-quant inspect DIR [--json]`: the inspect report as a readable table, or as JSON. */
import { inspectModel, type InspectReport, type PlanPreview } from '../api/inspect'
import { FORMAT_NAMES } from '../formats'
import type { MoeLayer } from '../model/resolve'
import { choice, localModel, parseArgs, UsageError, value } from './args'
import { bytes, count, ranges, table } from './format'

/** Groups consecutive MoE layers that share everything but the layer index, for a compact table. */
function layerGroups(layers: readonly MoeLayer[]): Array<{ indices: number[]; layer: MoeLayer }> {
  const key = (l: MoeLayer): string =>
    JSON.stringify([l.layout, l.experts, l.topK, l.hidden, l.intermediate, l.router, l.sharedExperts?.intermediate ?? null, l.sharedExperts?.gate !== undefined])
  const groups: Array<{ indices: number[]; layer: MoeLayer }> = []
  for (const layer of layers) {
    const last = groups[groups.length - 1]
    if (last && key(last.layer) === key(layer)) last.indices.push(layer.layer)
    else groups.push({ indices: [layer.layer], layer })
  }
  return groups
}

export function renderReport(report: InspectReport): string {
  const out: string[] = []
  out.push(`${report.dir}`)
  out.push(
    table(
      ['model', 'family', 'layers', 'hidden', 'dtype', 'size', 'parameters', 'experts', 'active/token'],
      [
        [
          report.modelType,
          report.family,
          String(report.numLayers),
          String(report.hiddenSize),
          report.dtype,
          bytes(report.sizeBytes),
          count(report.parameters.total),
          count(report.parameters.experts),
          count(report.parameters.activePerToken),
        ],
      ],
    ),
  )
  out.push('')
  if (report.moeLayers.length === 0) out.push('MoE layers: none (a dense model)')
  else out.push(
    table(
      ['MoE layers', 'layout', 'E', 'K', 'H', 'I', 'router', 'shared experts', 'tensors (first layer)'],
      layerGroups(report.moeLayers).map(({ indices, layer }) => [
        ranges(indices),
        layer.layout,
        String(layer.experts),
        String(layer.topK),
        String(layer.hidden),
        String(layer.intermediate),
        layer.router,
        layer.sharedExperts ? `I=${layer.sharedExperts.intermediate}${layer.sharedExperts.gate ? ', gated' : ''}` : 'none',
        [layer.tensors.gateUp ?? layer.tensors.gate, layer.tensors.up, layer.tensors.down]
          .filter(Boolean)
          .map((n) => (n as string).slice(layer.block.length + 1))
          .join(' '),
      ]),
    ),
  )
  out.push(`dense layers: ${ranges(report.denseLayers)}`)
  const reasons = new Map<string, number>()
  for (const { reason } of report.tensors.keep) reasons.set(reason, (reasons.get(reason) ?? 0) + 1)
  out.push(
    `tensors: ${report.tensors.quantize.length} to quantize, ${report.tensors.keep.length} kept (` +
      [...reasons].map(([r, n]) => `${n} ${r}`).join(', ') +
      ')',
  )
  if (report.formats.length > 0) {
    out.push('')
    out.push(
      table(
        ['format', 'quant_algo', 'takes it', 'why not / note'],
        report.formats.map((f) => [f.format, f.quantAlgo, f.support.replace('_', '-'), f.reason ?? '']),
      ),
    )
  }
  if (report.plan) out.push('', renderPlan(report.plan))
  for (const note of report.notes) out.push(`note: ${note}`)
  return out.join('\n')
}

/** The plan of a format and recipe, modules that differ only in their layer index on one row. */
export function renderPlan(plan: PlanPreview): string {
  const rows = new Map<string, { module: string; format: string; quantAlgo: string; layers: number[] }>()
  for (const { module, format, quantAlgo } of plan.layers) {
    const layer = /\.(\d+)\./.exec(module)
    const pattern = layer ? module.replace(`.${layer[1]}.`, '.*.') : module
    const row = rows.get(`${pattern} ${format}`) ?? { module: pattern, format, quantAlgo, layers: [] }
    if (layer) row.layers.push(Number(layer[1]))
    rows.set(`${pattern} ${format}`, row)
  }
  const body = [...rows.values()].map((r) => [r.module, r.format, r.quantAlgo, r.layers.length > 0 ? ranges(r.layers) : ''])
  return `plan: --format ${plan.format} writes ${plan.quantAlgo} (${plan.layers.length} modules quantized)\n${table(['module', 'format', 'quant_algo', 'layers'], body)}`
}

export const INSPECT_USAGE = `Usage:
  moe-quant inspect DIR [--format FORMAT [--recipe FILE]] [--json]

Reads only the headers of the checkpoint in DIR and shows its architecture, expert layout per MoE layer,
parameter counts, which tensors a quantization would quantize or keep, and which formats the model can
take (calibrated, weight-only, or not, with the reason).

Options:
  --format FORMAT  also show the plan of a quantization with FORMAT: every module it would quantize, with its
                   format (${FORMAT_NAMES.join(', ')})
  --recipe FILE    with --format: the plan of this mixed-precision recipe (as quantize --recipe takes it)
  --json           print the report as JSON (the same data as the tables)
  -h, --help       show this help`

/** `moe-quant inspect DIR [--json]`: returns the exit status. */
export async function inspectCommand(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv, { values: ['--format', '--recipe'], switches: ['--json'] }, 'inspect')
  if (args.help) {
    process.stdout.write(`${INSPECT_USAGE}\n`)
    return 0
  }
  const [dir, ...extra] = args.positional
  if (dir === undefined || extra.length > 0) throw new UsageError('inspect takes exactly one directory', 'inspect')
  const formatText = value(args, '--format')
  const format = formatText === undefined ? undefined : choice('--format', formatText, FORMAT_NAMES, 'inspect')
  const recipe = value(args, '--recipe')
  if (recipe !== undefined && format === undefined) throw new UsageError('--recipe needs --format (the format of the modules no rule names)', 'inspect')
  const report = await inspectModel(localModel(dir, 'inspect'), { ...(format ? { format } : {}), ...(recipe ? { recipe } : {}) })
  process.stdout.write(args.switches.has('--json') ? `${JSON.stringify(report, null, 2)}\n` : `${renderReport(report)}\n`)
  return 0
}
