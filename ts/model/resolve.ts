/**
 * Resolves a checkpoint's architecture: the registry entry for its `model_type` (which always wins) or the
 * generic structural match, checked against the detected layers. The result is the model descriptor that
 * inspect reports and that the native core is given.
 */
import { MoeQuantError } from '../errors'
import type { ExpertTensors } from '../native/contract'
import type { TextConfig } from './config'
import type { DetectedExperts, DetectedLayer, DetectedSharedExperts } from './detect'
import { hybridLayerKinds } from './layer-kinds'
import { lookupArchitecture } from './registry'
import type { ArchitectureEntry, ExpertLayoutKind, LayoutDecl, RouterKind } from './registry'

/** One MoE layer as the rest of moe-quant sees it; tensor names are full (`{e}` for per-expert ones). */
export interface MoeLayer {
  layer: number
  /** Full module path of the MoE block, e.g. `model.layers.1.mlp`. */
  block: string
  layout: ExpertLayoutKind
  experts: number
  topK: number
  hidden: number
  intermediate: number
  router: RouterKind
  tensors: {
    router: string
    routerBias?: string
    correctionBias?: string
    gate?: string
    up?: string
    down: string
    gateUp?: string
    gateUpBias?: string
    downBias?: string
  }
  sharedExperts: { module: string; intermediate: number; gate?: string } | null
}

export interface ResolvedModel {
  modelType: string
  family: string
  /** `registry` when an explicit entry matched, `generic` when only the structure did. */
  source: 'registry' | 'generic'
  moeLayers: MoeLayer[]
  denseLayers: number[]
}

/** Layers that the config says are MoE, under an entry's placement rule. */
export function moeLayerIndices(entry: ArchitectureEntry, config: TextConfig): number[] {
  const raw = config.raw
  const num = (key: string, fallback: number): number => (typeof raw[key] === 'number' ? (raw[key] as number) : fallback)
  const all = Array.from({ length: config.numLayers }, (_, i) => i)
  switch (entry.placement.kind) {
    case 'all':
      return all
    case 'sparse_step': {
      const mlpOnly = new Set(Array.isArray(raw.mlp_only_layers) ? (raw.mlp_only_layers as unknown[]) : [])
      const step = num('decoder_sparse_step', 1)
      return all.filter((i) => !mlpOnly.has(i) && step > 0 && (i + 1) % step === 0)
    }
    case 'first_k_dense': {
      const k = num('first_k_dense_replace', 0)
      const freq = num('moe_layer_freq', 1)
      return all.filter((i) => i >= k && i % freq === 0)
    }
    case 'none':
      return []
    case 'interleave': {
      if (Array.isArray(raw.moe_layers)) return (raw.moe_layers as number[]).filter((i) => i < config.numLayers)
      const step = num('interleave_moe_layer_step', 1)
      return all.filter((i) => (i + 1) % step === 0)
    }
    case 'hybrid_moe_layers': {
      const hybrid = entry.forward?.hybrid
      if (!hybrid) throw new MoeQuantError('E_INTERNAL', `${entry.family}: MoE placement by layer kind without a hybrid forward declaration`)
      return hybridLayerKinds(hybrid, raw, config.numLayers, 'config.json').flatMap((kind, i) => (kind === 'moe' ? [i] : []))
    }
    case 'expert_layer_period': {
      // JambaConfig.layers_num_experts: the experts on these layers, one expert (a dense MLP) elsewhere.
      const period = num('expert_layer_period', 2)
      const offset = num('expert_layer_offset', 1)
      if ((config.numExperts ?? 2) <= 1) return []
      return all.filter((i) => period > 0 && i % period === offset)
    }
    case 'num_dense_layers': {
      const dense = num('num_dense_layers', 2)
      return all.filter((i) => i >= dense)
    }
    case 'start_end_interval': {
      const start = num('moe_layer_start_index', 1)
      const endIndex = num('moe_layer_end_index', -1)
      const end = endIndex === -1 ? config.numLayers - 1 : endIndex
      const interval = num('moe_layer_interval', 1)
      return all.filter((i) => interval > 0 && (i + 1) % interval === 0 && i >= start && i <= end)
    }
    case 'mlp_layer_types': {
      const types = raw.mlp_layer_types
      if (Array.isArray(types)) return all.filter((i) => types[i] === 'sparse')
      const { firstDenseKey, firstDense } = entry.placement
      const k = firstDenseKey ? num(firstDenseKey, firstDense) : firstDense
      return all.filter((i) => i >= k)
    }
  }
}

function matchesDecl(decl: LayoutDecl, experts: DetectedExperts, router: string): boolean {
  const structural: ExpertLayoutKind = decl.kind === 'fused_interleaved' ? 'fused_transposed' : decl.kind
  if (structural !== experts.kind || decl.block !== experts.block || decl.router !== router) return false
  const t = decl.tensors
  const d = experts.tensors
  return t.gate === d.gate && t.up === d.up && t.down === d.down && t.gateUp === d.gateUp
}

function describeDecl(decl: LayoutDecl): string {
  const t = decl.tensors
  const names = [t.gate, t.up, t.down, t.gateUp].filter(Boolean).map((n) => `${decl.block}.${n}`)
  return `${decl.kind} (${names.join(', ')})`
}

function guessRouter(layer: DetectedLayer): RouterKind {
  if (layer.router?.correctionBias) return 'sigmoid_group_topk'
  if (layer.router?.bias) return 'topk_softmax'
  return 'softmax_topk'
}

/** Shared experts with full names, under `parent` (the MoE block, or the decoder layer when they sit beside it). */
function sharedExperts(shared: DetectedSharedExperts, parent: string): NonNullable<MoeLayer['sharedExperts']> {
  return { module: `${parent}.${shared.module}`, intermediate: shared.intermediate, ...(shared.gate ? { gate: `${parent}.${shared.gate}` } : {}) }
}

/**
 * No decoder layer holds experts: a dense model of a family without a dense entry, or experts in a layout
 * moe-quant does not read.
 * @throws MoeQuantError `E_MODEL_UNSUPPORTED` (dense) or `E_LAYOUT_UNRECOGNISED`
 */
function refuseWithoutMoe(config: TextConfig): never {
  if (config.numExperts === undefined) {
    throw new MoeQuantError(
      'E_MODEL_UNSUPPORTED',
      `this ${config.modelType} checkpoint is a dense model (config.json declares no experts and no decoder layer holds expert tensors): moe-quant quantizes Mixture-of-Experts models, and of the dense ones Llama, Qwen3 and Mistral`,
    )
  }
  throw new MoeQuantError(
    'E_LAYOUT_UNRECOGNISED',
    `no MoE layer found in this ${config.modelType} checkpoint: no decoder layer holds expert tensors in a layout moe-quant reads although config.json declares ${config.numExperts} experts ` +
      '(per-expert experts.{e}.<projection>.weight, or fused [experts, …] tensors)',
  )
}

/** A dense model of a family whose entry says so: every layer a dense MLP. */
function dense(config: TextConfig, entry: ArchitectureEntry, layers: readonly DetectedLayer[]): ResolvedModel {
  return { modelType: config.modelType, family: entry.family, source: 'registry', moeLayers: [], denseLayers: layers.map((l) => l.index) }
}

/** Applies the registry (or the generic rules) to the detected layers. */
export function resolveModel(config: TextConfig, layers: readonly DetectedLayer[]): ResolvedModel {
  const entry = lookupArchitecture(config.modelType)
  const moe = layers.filter((l) => l.kind === 'moe')
  if (moe.length === 0) {
    if (entry?.placement.kind === 'none' && config.numExperts === undefined) return dense(config, entry, layers)
    refuseWithoutMoe(config)
  }
  if (entry) {
    const expected = moeLayerIndices(entry, config)
    const found = moe.map((l) => l.index)
    if (expected.join(',') !== found.join(',')) {
      throw new MoeQuantError(
        'E_LAYOUT_UNRECOGNISED',
        `config.json places MoE blocks at layers [${expected.join(', ')}] (${entry.placement.kind} rule of ${entry.family}) but expert tensors are at layers [${found.join(', ')}]`,
      )
    }
  }
  const topK = config.topK
  if (topK === undefined || (config.numExperts !== undefined && topK > config.numExperts)) {
    throw new MoeQuantError(
      'E_CONFIG_INVALID',
      topK === undefined
        ? 'config.json gives no experts-per-token count (num_experts_per_tok)'
        : `config.json: num_experts_per_tok ${topK} exceeds the expert count ${config.numExperts}`,
    )
  }
  const moeLayers = moe.map((layer): MoeLayer => {
    const experts = layer.experts as DetectedExperts
    const router = layer.router?.weight ?? ''
    let layout = experts.kind
    if (entry) {
      const decl = entry.layouts.find((d) => matchesDecl(d, experts, router))
      if (!decl) {
        throw new MoeQuantError(
          'E_LAYOUT_UNRECOGNISED',
          `${layer.prefix}${experts.block}: ${entry.family} experts are expected as ${entry.layouts.map(describeDecl).join(' or ')}, ` +
            `but the tensors found are ${experts.kind} (${Object.values(experts.tensors).map((n) => `${experts.block}.${n}`).join(', ')}) with router ${experts.block}.${router}`,
        )
      }
      layout = decl.kind
    }
    const block = experts.block ? `${layer.prefix}${experts.block}` : layer.prefix.slice(0, -1)
    const full = (name: string | undefined): string | undefined => (name === undefined ? undefined : `${block}.${name}`)
    const tensors: MoeLayer['tensors'] = { router: full(router) as string, down: full(experts.tensors.down) as string }
    for (const key of ['gate', 'up', 'gateUp', 'gateUpBias', 'downBias'] as const) {
      const value = full(experts.tensors[key])
      if (value) tensors[key] = value
    }
    if (layer.router?.bias) tensors.routerBias = full(layer.router.bias)
    if (layer.router?.correctionBias) tensors.correctionBias = full(layer.router.correctionBias)
    const shared = layer.sharedExperts
    return {
      layer: layer.index,
      block,
      layout,
      experts: experts.experts,
      topK,
      hidden: experts.hidden,
      intermediate: experts.intermediate,
      router: entry?.router ?? guessRouter(layer),
      tensors,
      sharedExperts: shared ? sharedExperts(shared, shared.atLayer ? layer.prefix.slice(0, -1) : block) : null,
    }
  })
  return {
    modelType: config.modelType,
    family: entry ? entry.family : `${config.modelType} (generic)`,
    source: entry ? 'registry' : 'generic',
    moeLayers,
    denseLayers: layers.filter((l) => l.kind !== 'moe').map((l) => l.index),
  }
}

/** Where the native core reads a layer's routed experts from (the forward's MoE block and the quantizer). */
export function expertSource(layer: MoeLayer): ExpertTensors {
  const t = layer.tensors
  const source: ExpertTensors = { layout: layer.layout, experts: layer.experts, hidden: layer.hidden, intermediate: layer.intermediate, down: t.down }
  if (t.gate) source.gate = t.gate
  if (t.up) source.up = t.up
  if (t.gateUp) source.gate_up = t.gateUp
  if (t.gateUpBias) source.gate_up_bias = t.gateUpBias
  if (t.downBias) source.down_bias = t.downBias
  return source
}

/** Expands a layer's routed-expert tensor names (`{e}` patterns) into every tensor name. */
export function expertTensorNames(layer: MoeLayer): string[] {
  const t = layer.tensors
  const names: string[] = []
  for (const name of [t.gate, t.up, t.down, t.gateUp, t.gateUpBias, t.downBias]) {
    if (!name) continue
    if (name.includes('{e}')) for (let e = 0; e < layer.experts; e++) names.push(name.replace('{e}', String(e)))
    else names.push(name)
  }
  return names
}
