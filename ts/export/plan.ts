/**
 * The export plan: from the inspect report, the model descriptor and the options, decide which tensors are
 * quantized under which output (hub) names, which scales are shared (SPEC §4.3), which tensors are kept,
 * and the metadata files — everything the native exporter needs, so that it only does the bytes.
 */
import { MoeQuantError } from '../errors'
import { FORMATS, type QuantFormatName } from '../formats'
import { parseConfig } from '../model/config'
import type { InspectReport } from '../model/inspection'
import { HF_QUANT_CONFIG, type HeaderListing } from '../model/listing'
import { lookupArchitecture, wrapperTiesEmbeddings } from '../model/registry'
import { expertSource, expertTensorNames, type MoeLayer } from '../model/resolve'
import type { ExpertOutput, ExportPlan, KeptTensor, ModelDescriptor } from '../native/contract'
import { compressedTensorsConfig, compressedTensorsConfigJson, compressedTensorsIgnore, type ExportFormat } from './compressed-tensors'
import { checkExpertsForFormat } from './format-limits'
import { planCopies } from './files'
import { planAwqFolds, planAwqNorms, refuseForAwq } from './awq'
import { inputGroups } from './input-groups'
import { type KvCacheMode, kvScalePlans } from './kv-cache'
import { excludeModules, hfQuantConfig, listedWhenUnquantized, MODELOPT_VERSION, outputConfigJson, quantizationConfig } from './modelopt'
import { Excludes } from './patterns'
import { mixedHfQuantConfig, mixedQuantizationConfig, type Recipe, RecipeMatcher, recipeFormats, singleFormat } from './recipe'
import { dumpPyJson } from './python-json'

/**
 * Which linears are quantized, as ModelOpt's presets choose them: every linear but routers and the like
 * (`all`, its default configs); the feed-forward part only (`mlp`, its `*_mlp_only` presets: modules whose
 * name contains `mlp` or `block_sparse_moe`, and routed experts); routed experts only (`experts`, its
 * `*_experts_only` presets: modules under `.experts.` or `block_sparse_moe`; shared experts stay unquantized).
 */
export type QuantizeScope = 'all' | 'mlp' | 'experts'

/** Whether a linear outside the routed experts is quantized under `scope` (ModelOpt's quantizer-name patterns). */
export function inScope(module: string, scope: QuantizeScope): boolean {
  if (scope === 'all') return true
  const expertish = module.includes('.experts.') || module.includes('block_sparse_moe')
  return scope === 'experts' ? expertish : expertish || module.includes('mlp')
}

export interface PlanOptions {
  format: QuantFormatName
  scope: QuantizeScope
  /** Module-name patterns (`*` wildcards) kept unquantized on top of the defaults. */
  exclude: readonly string[]
  indivisible: 'error' | 'keep'
  /** How the KV cache is quantized (as resolved: `fp8` needs the descriptor of a calibrated format). */
  kvCache: KvCacheMode
  maxShardBytes: number
  overwrite: boolean
  /** Recorded as `quantizer` in hf_quant_config.json beside ModelOpt's `producer`. */
  tool: { name: string; version: string }
  /** Modules given another format than `format`, or none (export/recipe.ts): `MIXED_PRECISION`. */
  recipe?: Recipe
  /** ModelOpt's form (default) or compressed-tensors' (export/compressed-tensors.ts, checked by its caller). */
  exportFormat?: ExportFormat
}

export interface PlannedExport {
  plan: ExportPlan
  /** Linears kept unquantized because an input dimension is not a multiple of the format's group size (NVFP4). */
  keptIndivisible: string[]
  /** The `exclude_modules` written (compressed-tensors' form: its `ignore`). */
  excludeModules: string[]
  /** Each quantized module's format, by its name in `quantized_layers` (routed experts by their experts module). */
  quantizedLayers: Map<string, QuantFormatName>
  /** Input files not copied into the output (not on the allow-list of export/files.ts). */
  skippedFiles: string[]
}

const moduleOf = (tensor: string): string => tensor.replace(/\.(weight|bias)$/, '')

/** How the experts of one layer are written: the output form, and the block rename a fused input needs. */
interface ExpertNaming {
  output: ExpertOutput
  /** The quantized modules it writes, for `exclude_modules` and exclusion patterns. */
  modules: string[]
  rename?: [string, string]
}

/**
 * How the experts of one layer are written in the output: under the family's hub per-expert names
 * (`experts.{e}.gate_proj` or `experts.{e}.w1` …, under the hub block name), or `gate_proj/up_proj/down_proj`
 * when a fused input has no per-expert hub form; a fused input needs a block rename when the hub's block is
 * named otherwise (Mixtral's transformers 5 `mlp` is `block_sparse_moe` on the hub). Experts stored stacked
 * on the hub (`[E, H, 2I]`) are written stacked for the families ModelOpt exports so (GPT-OSS, Llama4): the
 * stacks keep their names, quantized; other families' (Qwen3-VL-MoE) one module per expert and projection.
 */
function expertNaming(layer: MoeLayer, modelType: string): ExpertNaming {
  const layerPrefix = layer.block.slice(0, layer.block.lastIndexOf('.') + 1)
  // Ungated experts (up and down only) write no gate.
  const gated = layer.tensors.gate !== undefined || layer.tensors.gateUp !== undefined
  const perExpert = (gate: string, up: string, down: string): ExpertNaming => {
    const projections = gated ? [gate, up, down] : [up, down]
    return {
      output: gated ? { kind: 'per_expert', gate, up, down } : { kind: 'per_expert', up, down },
      modules: Array.from({ length: layer.experts }, (_, e) => projections.map((p) => p.replace('{e}', String(e)))).flat(),
    }
  }
  const entry = lookupArchitecture(modelType)
  if (layer.layout === 'per_expert' && !entry?.exportInMemoryNames) {
    const strip = (name: string | undefined): string => (name === undefined ? '' : moduleOf(name))
    return perExpert(strip(layer.tensors.gate), strip(layer.tensors.up), strip(layer.tensors.down))
  }
  // ModelOpt's stacked form is known (and pinned by goldens) for the families whose entries say so.
  if (entry?.exportStacked) return stackedNaming(layer)
  const inMemory = entry?.exportInMemoryNames && entry.layouts.find((l) => l.kind === 'fused')
  if (inMemory) {
    const block = `${layerPrefix}${inMemory.block}.experts.{e}`
    return perExpert(`${block}.gate_proj`, `${block}.up_proj`, `${block}.down_proj`)
  }
  const hub = entry?.layouts.find((l) => l.kind === 'per_expert')
  if (!entry && layer.layout !== 'fused') {
    throw new MoeQuantError(
      'E_MODEL_UNSUPPORTED',
      `${layer.block}: experts stored stacked on the hub (${layer.layout}) by a family without a registry entry (${modelType}): the form ModelOpt exports them in is known for the families with one`,
    )
  }
  if (hub) {
    const block = `${layerPrefix}${hub.block}`
    const name = (t: string | undefined): string => (t === undefined ? '' : `${block}.${moduleOf(t)}`)
    const naming = perExpert(name(hub.tensors.gate), name(hub.tensors.up), name(hub.tensors.down))
    return block === layer.block ? naming : { ...naming, rename: [`${layer.block}.`, `${block}.`] }
  }
  return perExpert(`${layer.block}.experts.{e}.gate_proj`, `${layer.block}.experts.{e}.up_proj`, `${layer.block}.experts.{e}.down_proj`)
}

/** The stacked (fused) output of experts stored `[E, H, 2I]` on the hub. */
function stackedNaming(layer: MoeLayer): ExpertNaming {
  const gateUp = layer.tensors.gateUp as string
  return { output: { kind: 'fused', gate_up: gateUp, down: layer.tensors.down }, modules: [gateUp.slice(0, gateUp.lastIndexOf('.'))] }
}

/** What planning the experts and the linears shares. */
interface Planning {
  options: PlanOptions
  excludes: Excludes
  recipe: RecipeMatcher | null
  /** The format of each quantized module, by input module (linears) and by `quantized_layers` name. */
  linearFormats: Map<string, QuantFormatName>
  quantizedLayers: Map<string, QuantFormatName>
  /** Every module a recipe could name (quantizable linears by output name, experts modules). */
  candidates: string[]
  /** Block renames a fused input needs (`from.` → `to.`), found with the experts. */
  renames: Array<[string, string]>
  /** The renames of a layout that transformers renames on load, which ModelOpt exports under its names. */
  layoutRenames: readonly (readonly [RegExp, string])[]
  /** Fused q/k/v modules, with the rows of q, k and v. */
  fusedQkv: Map<string, { q: number; kv: number }>
  /** Output names of every quantized module, for `exclude_modules`. */
  quantizedModules: string[]
  /** Experts modules whose stacks stay unquantized (their parameters are not `.weight`s), for `exclude_modules`. */
  keptStacks: string[]
  keptIndivisible: string[]
}

/** The output (hub) name of an input tensor or module. */
function outputName(planning: Planning, name: string): string {
  for (const [from, to] of planning.renames) if (name.startsWith(from)) return to + name.slice(from.length)
  return planning.layoutRenames.reduce((renamed, [pattern, to]) => renamed.replace(pattern, to), name)
}

/** A module's format: the last recipe rule naming it (`output`, its output name), else the run's if `inScope`; null keeps
 * it unquantized. */
function formatFor(planning: Planning, output: string, inScope: boolean): QuantFormatName | null {
  planning.candidates.push(output)
  const ruled = planning.recipe?.formatOf(output)
  return ruled !== undefined ? ruled : inScope ? planning.options.format : null
}

/** `E_TENSOR_SHAPE` for a weight whose input dimension `inputs` is not a multiple of its format's group size, or
 * false (the module is kept unquantized) with `indivisible: 'keep'`; true when the format takes it. */
function divisible(planning: Planning, format: QuantFormatName, inputs: number[], tensor: string, what: string, shape?: number[]): boolean {
  const { groupSize, quantAlgo } = FORMATS[format]
  if (groupSize === null || inputs.every((n) => n % groupSize === 0)) return true
  if (planning.options.indivisible === 'keep') return false
  throw new MoeQuantError(
    'E_TENSOR_SHAPE',
    `${what}: ${quantAlgo} needs input dimensions that are multiples of ${groupSize}` + ' (pass indivisible: "keep" to keep such linears unquantized)',
    { tensor, ...(shape ? { shape } : {}) },
  )
}

/** The export renames of the family's other layout when the checkpoint is in it (Param2 / Sarvam-MoE hub names). */
function layoutRenames(report: InspectReport, listing: HeaderListing): readonly (readonly [RegExp, string])[] {
  const other = lookupArchitecture(report.modelType)?.forward?.layoutNames
  return other && listing.tensors.some((t) => t.name.endsWith(other.suffix)) ? other.exportRenames : []
}

/**
 * The tensors kept as they are, under their output names; those transformers joins on load (the family's
 * `exportInMemoryNames`) joined into one, where the checkpoint holds every part of a join.
 */
function keptTensors(report: InspectReport, listing: HeaderListing, quantized: Set<string>, planning: Planning): KeptTensor[] {
  const kept = listing.tensors.filter((t) => !quantized.has(t.name)).map((t) => t.name)
  const present = new Set(kept)
  // By its first part, each joined tensor; the other parts are written in it.
  const joined = new Map<string, KeptTensor>()
  const inJoins = new Set<string>()
  for (const { parts, joined: name } of lookupArchitecture(report.modelType)?.exportInMemoryNames?.joins ?? []) {
    const [first, ...rest] = parts as [string, ...string[]]
    for (const input of kept.filter((n) => n.endsWith(first))) {
      const prefix = input.slice(0, -first.length)
      const others = rest.map((part) => `${prefix}${part}`)
      if (!others.every((n) => present.has(n))) continue
      joined.set(input, { input, output: outputName(planning, `${prefix}${name}`), join: others })
      for (const other of others) inJoins.add(other)
    }
  }
  return kept.filter((input) => !inJoins.has(input)).map((input) => joined.get(input) ?? { input, output: outputName(planning, input) })
}

/** The fused q/k/v projections of the forward, with the rows of q and of k (and v). ModelOpt exports each as the
 * q_proj, k_proj and v_proj transformers splits it into; a bias would have to be split likewise, which is not
 * written yet. */
function fusedQkv(descriptor: ModelDescriptor | null): Map<string, { q: number; kv: number }> {
  const fused = new Map<string, { q: number; kv: number }>()
  for (const { attention } of descriptor?.layers ?? []) {
    if (attention?.kind !== 'gqa' || !attention.qkv) continue
    if (attention.qkv_bias) throw new MoeQuantError('E_MODEL_UNSUPPORTED', `${attention.qkv}: exporting a fused q/k/v projection with a bias is not supported yet`)
    const kv = attention.num_kv_heads * attention.head_dim
    fused.set(attention.qkv, { q: attention.num_heads * attention.head_dim * (attention.output_gate ? 2 : 1), kv })
  }
  return fused
}

/** The routed experts quantized, layer by layer, and their input tensors. */
function planExperts(report: InspectReport, planning: Planning): { experts: ExportPlan['experts']; expertTensors: Set<string> } {
  const experts: ExportPlan['experts'] = []
  const expertTensors = new Set<string>()
  for (const layer of report.moeLayers) {
    const naming = expertNaming(layer, report.modelType)
    // A stacked output keeps the biases beside the stacks, unquantized.
    const names = naming.output.kind === 'fused' ? [naming.output.gate_up, naming.output.down] : expertTensorNames(layer)
    if (naming.rename) planning.renames.push(naming.rename)
    const module = (naming.modules[0] as string).replace(/(\.experts)\..*$/, '$1')
    const format = planning.excludes.test(naming.modules[0] as string) ? null : formatFor(planning, module, true)
    const what = `${names[0]}: the experts of ${layer.block} have H = ${layer.hidden}, I = ${layer.intermediate}`
    const kept = format === null || !divisible(planning, format, [layer.hidden, layer.intermediate], names[0] as string, what)
    if (kept || format === null) {
      if (format !== null) planning.keptIndivisible.push(`${layer.block}.experts`)
      if (naming.output.kind === 'fused') planning.keptStacks.push(...naming.modules)
      continue
    }
    checkExpertsForFormat(layer, format, naming.output.kind, names[0] as string)
    if (naming.output.kind === 'fused' && planning.options.exportFormat === 'compressed-tensors') {
      throw new MoeQuantError('E_OPTION_INVALID', `exportFormat 'compressed-tensors': the experts of ${layer.block} are written stacked (${names[0]}), which compressed-tensors has no form for; use exportFormat 'modelopt'`)
    }
    for (const name of names) expertTensors.add(name)
    experts.push({ layer: layer.layer, block: layer.block, source: expertSource(layer), output: naming.output, ...(planning.recipe ? { format } : {}) })
    planning.quantizedModules.push(...naming.modules)
    planning.quantizedLayers.set(module, format)
  }
  return { experts, expertTensors }
}

/** The modules of the other linears to quantize (attention projections, dense MLPs, shared experts). */
function linearModules(report: InspectReport, listing: HeaderListing, expertTensors: Set<string>, planning: Planning): Set<string> {
  const { options } = planning
  const byName = new Map(listing.tensors.map((t) => [t.name, t]))
  const planned = new Set<string>()
  for (const name of report.tensors.quantize) {
    if (expertTensors.has(name) || !name.endsWith('.weight')) continue
    if (report.moeLayers.some((l) => expertTensorNames(l).includes(name))) continue
    const module = moduleOf(name)
    const tensor = byName.get(name)
    if (planning.excludes.test(module) || !tensor || tensor.shape.length !== 2) continue
    const format = formatFor(planning, outputName(planning, module), inScope(module, options.scope))
    if (format === null) continue
    const what = `${name} [${tensor.shape.join(', ')}]`
    if (!divisible(planning, format, [tensor.shape[1] as number], name, what, tensor.shape)) {
      planning.keptIndivisible.push(module)
      continue
    }
    planned.add(module)
    planning.linearFormats.set(module, format)
  }
  return planned
}

/** The linears of `planned`, each with the linears it shares scales with. */
function planLinears(descriptor: ModelDescriptor | null, planned: Set<string>, planning: Planning): ExportPlan['linears'] {
  const groupOf = new Map<string, string[]>()
  for (const group of inputGroups(descriptor, planned)) for (const module of group) groupOf.set(module, group)
  const layerOf = (name: string): number => {
    const match = /(?:^|\.)(?:layers|blocks)\.(\d+)\./.exec(name)
    if (!match) throw new MoeQuantError('E_INTERNAL', `${name} is quantized but belongs to no decoder layer`)
    return Number(match[1])
  }
  // Linears the forward never runs (a Mamba mixer's dt_proj, whose weight multiplies directly) have no input
  // statistics: ModelOpt quantizes their weight and writes no input_scale.
  const unobserved = new Set(descriptor?.layers.flatMap((l) => (l.attention?.kind === 'mamba' ? [l.attention.dt_proj] : [])))
  const linears: ExportPlan['linears'] = []
  for (const module of planned) {
    const format = planning.linearFormats.get(module) ?? planning.options.format
    const own = planning.recipe ? { format } : {}
    const fused = planning.fusedQkv.get(module)
    if (fused) {
      // One linear per projection, from its rows; they share the fused module's input, and with a group-scaled format
      // the amax of its whole weight.
      const parent = outputName(planning, module).replace(/\.[^.]+$/, '')
      const parts: [string, number, number][] = [['q_proj', 0, fused.q], ['k_proj', fused.q, fused.kv], ['v_proj', fused.q + fused.kv, fused.kv]]
      for (const [projection, start, count] of parts) {
        const output = `${parent}.${projection}`
        const weightGroup = FORMATS[format].sharedWeightAmax ? [module] : []
        linears.push({ layer: layerOf(module), module, output, weight_group: weightGroup, input_group: [], weight_only: false, rows: [start, count], ...own })
        planning.quantizedModules.push(output)
        planning.quantizedLayers.set(output, format)
      }
      continue
    }
    const group = (groupOf.get(module) ?? []).filter((m) => planned.has(m))
    const shared = group.length > 1 ? group : []
    const output = outputName(planning, module)
    const other = shared.find((m) => planning.linearFormats.get(m) !== format)
    if (other !== undefined) {
      throw new MoeQuantError(
        'E_OPTION_INVALID',
        `recipe: ${output} is ${format} but ${outputName(planning, other)}, which reads the same input, is ${planning.linearFormats.get(other)}: ` +
          `modules that read one input (${shared.map((m) => outputName(planning, m)).join(', ')}) share one format (engines load them as one fused linear)`,
      )
    }
    // A group-scaled format's per-tensor weight_scale_2 is shared by the linears that read one input (and
    // fp8_pb_wo's amax, where the native core finds the group's first weight a single tile).
    const weightGroup = FORMATS[format].sharedWeightAmax ? shared : []
    linears.push({ layer: layerOf(module), module, output, weight_group: weightGroup, input_group: shared, weight_only: unobserved.has(module), rows: null, ...own })
    planning.quantizedModules.push(output)
    planning.quantizedLayers.set(output, format)
  }
  return linears
}

/**
 * Whether the model's `lm_head` is the token embedding, stored once under the embedding's name: ModelOpt still
 * lists the module `lm_head` as unquantized (config `tie_word_embeddings`, a declared wrapper's, else the family's default).
 */
function tiedLmHead(report: InspectReport, listing: HeaderListing): boolean {
  if (listing.tensors.some((t) => t.name === 'lm_head.weight' || t.name.endsWith('.lm_head.weight'))) return false
  const config = parseConfig(listing.config, `${listing.dir}/config.json`)
  const wrapper = wrapperTiesEmbeddings(config.modelType, config.outerModelType, listing.config)
  if (wrapper !== undefined) return wrapper
  const given = config.raw.tie_word_embeddings
  if (typeof given === 'boolean') return given
  return config.tieWordEmbeddings || lookupArchitecture(report.modelType)?.forward?.configDefaults.tie_word_embeddings === true
}

/**
 * Routers whose module transformers 5 names otherwise than the hub (Granite's `router.layer` is `router`,
 * PhiMoE's `gate` is `router`): ModelOpt lists them under that name, in the hub's block. Pairs (hub module,
 * listed module), from the entry's transformers 5 layout (`experts.gate_up_proj`).
 */
function routerModuleNames(report: InspectReport): [string, string][] {
  const fused = lookupArchitecture(report.modelType)?.layouts.find((l) => l.kind === 'fused' && l.tensors.gateUp === 'experts.gate_up_proj')
  if (!fused) return []
  return report.moeLayers.flatMap((layer) => {
    const hub = moduleOf(layer.tensors.router)
    const inMemory = `${layer.block}.${moduleOf(fused.router)}`
    return hub === inMemory ? [] : [[hub, inMemory] as [string, string]]
  })
}

/** config.json and hf_quant_config.json of the output, with ModelOpt's `exclude_modules` (compressed-tensors' form:
 * config.json alone, with the unquantized linears listed in `ignore`). */
function metadataFiles(listing: HeaderListing, options: PlanOptions, exclude: string[], layers: Map<string, QuantFormatName>, ignore: string[]): Record<string, string> {
  const source = `${listing.dir}/config.json`
  if (options.exportFormat === 'compressed-tensors') return { 'config.json': compressedTensorsConfigJson(listing.config, compressedTensorsConfig(options.format, ignore, options.kvCache), source) }
  const format = singleFormat(layers, options.format)
  const config = format ? quantizationConfig(format, exclude, undefined, options.kvCache) : mixedQuantizationConfig(layers, MODELOPT_VERSION, options.kvCache)
  const hfQuant = format ? hfQuantConfig(format, exclude, undefined, options.tool, options.kvCache) : mixedHfQuantConfig(layers, MODELOPT_VERSION, options.tool, options.kvCache)
  return { 'config.json': outputConfigJson(listing.config, config, source), [HF_QUANT_CONFIG]: dumpPyJson(hfQuant) }
}

/** Builds the export plan; `descriptor` is the calibration forward's (null for a weight-only format). */
export function planExport(report: InspectReport, descriptor: ModelDescriptor | null, listing: HeaderListing, options: PlanOptions): PlannedExport {
  const planning: Planning = {
    options,
    excludes: new Excludes(options.exclude),
    recipe: options.recipe ? new RecipeMatcher(options.recipe) : null,
    linearFormats: new Map(),
    quantizedLayers: new Map(),
    candidates: [],
    renames: [],
    // Weight-only formats (no descriptor, so no split of a fused q/k/v) keep the checkpoint's names, except where
    // ModelOpt writes transformers 5's whatever the format.
    layoutRenames: [...(descriptor ? layoutRenames(report, listing) : []), ...(lookupArchitecture(report.modelType)?.exportInMemoryNames?.renames ?? [])],
    fusedQkv: fusedQkv(descriptor),
    quantizedModules: [],
    keptStacks: [],
    keptIndivisible: [],
  }
  refuseForAwq(recipeFormats(options.format, options.recipe), descriptor, Boolean(options.recipe))
  const { experts, expertTensors } = planExperts(report, planning)
  const planned = linearModules(report, listing, expertTensors, planning)
  const linears = planLinears(descriptor, planned, planning)
  if (options.kvCache === 'fp8' && !descriptor) throw new MoeQuantError('E_INTERNAL', "a calibrated KV cache ('fp8') needs the calibration forward")
  const kvScales = options.kvCache === 'fp8' && descriptor ? kvScalePlans(descriptor, (module) => outputName(planning, module)) : []

  // Everything else is kept in its source dtype, under its (hub) output name.
  const quantizedWeights = new Set([...expertTensors, ...[...planned].map((m) => `${m}.weight`)])
  const keep = keptTensors(report, listing, quantizedWeights, planning)
  for (const module of new Set(listing.tensors.map((t) => moduleOf(t.name)))) planning.excludes.test(outputName(planning, module))
  planning.excludes.refuseUnmatched(planning.quantizedModules)
  planning.recipe?.refuseUnmatched(planning.candidates)

  // ModelOpt lists unquantized modules that own a weight, except norms and convolutions it leaves enabled
  // (moduleLists' rule), routers by their module in transformers.
  const unquantized = new Set(keep.flatMap(({ output }) => (output.endsWith('.weight') && listedWhenUnquantized(moduleOf(output)) ? [moduleOf(output)] : [])))
  for (const module of planning.keptStacks) unquantized.add(module)
  if (tiedLmHead(report, listing)) unquantized.add('lm_head')
  for (const [hub, inMemory] of routerModuleNames(report)) if (unquantized.delete(hub)) unquantized.add(inMemory)
  const unlisted = lookupArchitecture(report.modelType)?.exportUnlisted ?? []
  for (const module of unquantized) if (unlisted.some((suffix) => module.endsWith(suffix))) unquantized.delete(module)
  const exclude = excludeModules([...unquantized].sort(), planning.quantizedModules)
  // compressed-tensors' `ignore`: the unquantized linears by name (routers, lm_head, those excluded, out of scope or kept).
  const quantizedModules = new Set(planning.quantizedModules)
  const routers = report.tensors.keep.filter((k) => k.reason === 'router').map((k) => k.name)
  const linearNames = [...report.tensors.quantize, ...routers].filter((t) => t.endsWith('.weight')).map((t) => outputName(planning, moduleOf(t)))
  const hasLmHead = unquantized.has('lm_head') || listing.tensors.some((t) => t.name === 'lm_head.weight')
  const ignore = compressedTensorsIgnore([...linearNames.filter((m) => !quantizedModules.has(m)), ...(hasLmHead ? ['lm_head'] : [])])
  const files = metadataFiles(listing, options, exclude, planning.quantizedLayers, ignore)
  const { copy, skipped } = planCopies(listing.other_files, Object.keys(files))
  // AWQ: the norms that absorb a group's smoothing are written by their layer, not kept.
  const awq = planAwqNorms(recipeFormats(options.format, options.recipe), descriptor, linears, keep)
  return {
    plan: { format: options.format, keep: awq.keep, linears, experts, kv_scales: kvScales, awq_norms: awq.norms, awq_folds: planAwqFolds(options.format, report.modelType, descriptor, linears, experts), files, copy, max_shard_bytes: options.maxShardBytes, overwrite: options.overwrite, encoding: options.exportFormat ?? 'modelopt' },
    keptIndivisible: planning.keptIndivisible,
    excludeModules: options.exportFormat === 'compressed-tensors' ? ignore : singleFormat(planning.quantizedLayers, options.format) ? exclude : [],
    quantizedLayers: planning.quantizedLayers,
    skippedFiles: skipped,
  }
}
