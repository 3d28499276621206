/**
 * The export plan: from the inspect report, the model descriptor and the options, decide which tensors are
 * quantized under which output (hub) names, which scales are shared (SPEC §4.3), which tensors are kept,
 * and the metadata files — everything the native exporter needs, so that it only does the bytes.
 */
import { MoeQuantError } from '../errors'
import { FORMATS, type QuantFormatName } from '../formats'
import type { InspectReport } from '../model/inspection'
import type { HeaderListing } from '../model/listing'
import { lookupArchitecture } from '../model/registry'
import { expertTensorNames, type MoeLayer } from '../model/resolve'
import type { ExportPlan, ModelDescriptor } from '../native/contract'
import { planCopies } from './files'
import { dumpPyJson } from './python-json'
import { excludeModules, hfQuantConfig, quantizationConfig, outputConfigJson } from './modelopt'

export type { ExportPlan }

export interface PlanOptions {
  format: QuantFormatName
  /** Module-name patterns (`*` wildcards) kept unquantized on top of the defaults. */
  exclude: readonly string[]
  indivisible: 'error' | 'keep'
  maxShardBytes: number
  overwrite: boolean
  /** Recorded as `quantizer` in hf_quant_config.json beside ModelOpt's `producer`. */
  tool: { name: string; version: string }
}

export interface PlannedExport {
  plan: ExportPlan
  /** Linears kept unquantized because an input dimension is not a multiple of the format's group size (NVFP4). */
  keptIndivisible: string[]
  /** The `exclude_modules` written. */
  excludeModules: string[]
  /** Input files not copied into the output (not on the allow-list of export/files.ts). */
  skippedFiles: string[]
}

/** `*` wildcards → a RegExp over whole module names. */
function globToRegExp(pattern: string): RegExp {
  const escaped = pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')
  return new RegExp(`^${escaped}$`)
}

const moduleOf = (tensor: string): string => tensor.replace(/\.(weight|bias)$/, '')

/**
 * How the experts of one layer are named in the output: the family's hub per-expert names
 * (`experts.{e}.gate_proj` or `experts.{e}.w1` …, under the hub block name), or `gate_proj/up_proj/down_proj`
 * when the family stores experts fused even on the hub. Also returns the block rename a fused input needs
 * (Mixtral's transformers 5 `mlp` is `block_sparse_moe` on the hub).
 */
function expertNaming(layer: MoeLayer, modelType: string): { gate: string; up: string; down: string; rename?: [string, string] } {
  const layerPrefix = layer.block.slice(0, layer.block.lastIndexOf('.') + 1)
  if (layer.layout === 'per_expert') {
    const strip = (name: string | undefined): string => moduleOf(name as string)
    return { gate: strip(layer.tensors.gate), up: strip(layer.tensors.up), down: strip(layer.tensors.down) }
  }
  const hub = lookupArchitecture(modelType)?.layouts.find((l) => l.kind === 'per_expert')
  if (hub) {
    const block = `${layerPrefix}${hub.block}`
    const name = (t: string | undefined): string => `${block}.${moduleOf(t as string)}`
    const naming = { gate: name(hub.tensors.gate), up: name(hub.tensors.up), down: name(hub.tensors.down) }
    return block === layer.block ? naming : { ...naming, rename: [`${layer.block}.`, `${block}.`] }
  }
  return {
    gate: `${layer.block}.experts.{e}.gate_proj`,
    up: `${layer.block}.experts.{e}.up_proj`,
    down: `${layer.block}.experts.{e}.down_proj`,
  }
}

/** Groups of linears that read the same input: q/k/v, and gate/up of dense MLPs and shared experts. */
function inputGroups(descriptor: ModelDescriptor): string[][] {
  const groups: string[][] = []
  for (const layer of descriptor.layers) {
    if (layer.attention.kind === 'gqa') groups.push([layer.attention.q, layer.attention.k, layer.attention.v])
    if (layer.mlp.kind === 'dense') groups.push([layer.mlp.gate, layer.mlp.up])
    if (layer.mlp.kind === 'moe' && layer.mlp.shared) groups.push([layer.mlp.shared.mlp.gate, layer.mlp.shared.mlp.up])
  }
  return groups
}

/** Builds the export plan. */
export function planExport(report: InspectReport, descriptor: ModelDescriptor, listing: HeaderListing, options: PlanOptions): PlannedExport {
  const { groupSize, quantAlgo } = FORMATS[options.format]
  const excluded = options.exclude.map(globToRegExp)
  // Which patterns matched a module: one that matches none is most likely misspelled.
  const matched = new Set<number>()
  const isExcluded = (module: string): boolean => {
    const hits = excluded.flatMap((re, i) => (re.test(module) ? [i] : []))
    for (const i of hits) matched.add(i)
    return hits.length > 0
  }
  const byName = new Map(listing.tensors.map((t) => [t.name, t]))
  const layerOf = (name: string): number => {
    const match = /(?:^|\.)(?:layers|blocks)\.(\d+)\./.exec(name)
    if (!match) throw new MoeQuantError('E_INTERNAL', `${name} is quantized but belongs to no decoder layer`)
    return Number(match[1])
  }
  const renames: Array<[string, string]> = []
  const outputName = (name: string): string => {
    for (const [from, to] of renames) if (name.startsWith(from)) return to + name.slice(from.length)
    return name
  }

  // Routed experts.
  const experts: ExportPlan['experts'] = []
  const expertTensors = new Set<string>()
  const quantizedModules: string[] = []
  const keptIndivisible: string[] = []
  for (const layer of report.moeLayers) {
    const names = expertTensorNames(layer)
    const naming = expertNaming(layer, report.modelType)
    if (naming.rename) renames.push(naming.rename)
    const indivisible = groupSize !== null && (layer.hidden % groupSize !== 0 || layer.intermediate % groupSize !== 0)
    if (isExcluded(naming.gate.replace('{e}', '0')) || indivisible) {
      if (indivisible && options.indivisible === 'error') {
        throw new MoeQuantError(
          'E_TENSOR_SHAPE',
          `${names[0]}: ${quantAlgo} needs input dimensions that are multiples of ${groupSize}, but the experts of ${layer.block} have H = ${layer.hidden}, I = ${layer.intermediate}` +
            ' (pass indivisible: "keep" to keep such linears unquantized)',
          { tensor: names[0] },
        )
      }
      if (indivisible) keptIndivisible.push(`${layer.block}.experts`)
      continue
    }
    for (const name of names) expertTensors.add(name)
    experts.push({ layer: layer.layer, block: layer.block, gate: naming.gate, up: naming.up, down: naming.down })
    for (let e = 0; e < layer.experts; e++) {
      for (const pattern of [naming.gate, naming.up, naming.down]) quantizedModules.push(pattern.replace('{e}', String(e)))
    }
  }

  // Other linears: attention projections, dense MLPs, shared experts.
  const groups = inputGroups(descriptor)
  const groupOf = new Map<string, string[]>()
  for (const group of groups) for (const module of group) groupOf.set(module, group)
  const planned = new Set<string>()
  const linears: ExportPlan['linears'] = []
  for (const name of report.tensors.quantize) {
    if (expertTensors.has(name) || !name.endsWith('.weight')) continue
    if (report.moeLayers.some((l) => expertTensorNames(l).includes(name))) continue
    const module = moduleOf(name)
    const tensor = byName.get(name)
    if (isExcluded(module) || !tensor || tensor.shape.length !== 2) continue
    const inputs = tensor.shape[1] as number
    if (groupSize !== null && inputs % groupSize !== 0) {
      if (options.indivisible === 'error') {
        throw new MoeQuantError(
          'E_TENSOR_SHAPE',
          `${name} [${tensor.shape.join(', ')}]: ${quantAlgo} needs an input dimension that is a multiple of ${groupSize}, this one is ${inputs}` +
            ' (pass indivisible: "keep" to keep such linears unquantized)',
          { tensor: name, shape: tensor.shape },
        )
      }
      keptIndivisible.push(module)
      continue
    }
    planned.add(module)
  }
  for (const module of planned) {
    const group = (groupOf.get(module) ?? []).filter((m) => planned.has(m))
    const shared = group.length > 1 ? group : []
    linears.push({
      layer: layerOf(module),
      module,
      output: outputName(module),
      // A group-scaled format's per-tensor weight_scale_2 is shared by the linears that read one input.
      weight_group: groupSize !== null ? shared : [],
      input_group: shared,
    })
    quantizedModules.push(outputName(module))
  }

  // Everything else is kept in its source dtype, under its (hub) output name.
  const quantizedWeights = new Set([...expertTensors, ...[...planned].map((m) => `${m}.weight`)])
  const keep = listing.tensors.filter((t) => !quantizedWeights.has(t.name)).map((t) => ({ input: t.name, output: outputName(t.name) }))

  const modules = [...new Set(listing.tensors.map((t) => moduleOf(t.name)))]
  for (const module of modules) isExcluded(outputName(module))
  const unmatched = options.exclude.filter((_, i) => !matched.has(i))
  if (unmatched.length > 0) {
    const examples = [...new Set(quantizedModules.map((m) => m.replace(/\.\d+\./g, '.*.')))].slice(0, 4)
    throw new MoeQuantError(
      'E_OPTION_INVALID',
      `exclude: ${unmatched.map((p) => JSON.stringify(p)).join(', ')} ${unmatched.length > 1 ? 'match' : 'matches'} no module of this model ` +
        `(patterns match whole module names with * wildcards, e.g. ${examples.join(', ')})`,
    )
  }

  // ModelOpt lists unquantized modules that own a weight, except norms (moduleLists' rule).
  const unquantized = new Set<string>()
  for (const { output } of keep) {
    if (!output.endsWith('.weight')) continue
    const module = moduleOf(output)
    const leaf = module.slice(module.lastIndexOf('.') + 1)
    if (/norm/i.test(leaf) || /^ln(_|$)/.test(leaf)) continue
    unquantized.add(module)
  }
  const exclude = excludeModules([...unquantized].sort(), quantizedModules)
  const configText = outputConfigJson(listing.config, quantizationConfig(options.format, exclude), `${listing.dir}/config.json`)
  const files: Record<string, string> = {
    'config.json': configText,
    'hf_quant_config.json': dumpPyJson(hfQuantConfig(options.format, exclude, undefined, options.tool)),
  }
  const { copy, skipped } = planCopies(listing.other_files, Object.keys(files))
  return {
    plan: { format: options.format, keep, linears, experts, files, copy, max_shard_bytes: options.maxShardBytes, overwrite: options.overwrite },
    keptIndivisible,
    excludeModules: exclude,
    skippedFiles: skipped,
  }
}
