/**
 * Structural expert-layout detection over a checkpoint's header listing. Every decoder layer's tensors are
 * matched against the layouts of SPEC §2 by name and shape (gated experts, or ungated ones with up and down
 * only), then validated strictly: an even gate/up split,
 * E equal to the config's expert count, H and I consistent across gate/up/down and with config.json, the
 * orientation checked against H and I. Nothing here knows model families; the registry (resolve.ts)
 * decides which of the detected structures a family may use.
 */
import { MoeQuantError } from '../errors'
import type { TextConfig } from './config'
import type { TensorHeader } from './listing'
import type { ExpertLayoutKind, ExpertTensorNames } from './registry/types'

/** The routed experts of one MoE layer as found on disk. Tensor names are relative to the block. */
export interface DetectedExperts {
  kind: ExpertLayoutKind
  /** Block path inside the decoder layer (`mlp`, `block_sparse_moe`, `feed_forward`). */
  block: string
  experts: number
  hidden: number
  intermediate: number
  /** Relative tensor names; per-expert ones contain `{e}`. */
  tensors: ExpertTensorNames
}

export interface DetectedRouter {
  /** `[E,H]` weight, relative to the block. */
  weight: string
  bias?: string
  /** DeepSeek-V3/GLM4 `e_score_correction_bias [E]`. */
  correctionBias?: string
}

export interface DetectedSharedExperts {
  /** Module path relative to the block (relative to the decoder layer when `atLayer`). */
  module: string
  /** The shared experts sit beside the MoE block in the decoder layer (Granite's `shared_mlp`), not inside it. */
  atLayer?: boolean
  /** Intermediate size of the shared MLP (all shared experts together). */
  intermediate: number
  /** `[1,H]` gate weight relative to the block, when the shared output is gated. */
  gate?: string
}

export interface DetectedLayer {
  index: number
  /** Full name prefix of the layer, e.g. `model.layers.3.`. */
  prefix: string
  kind: 'moe' | 'dense' | 'none'
  experts?: DetectedExperts
  router?: DetectedRouter
  sharedExperts?: DetectedSharedExperts
  /** Dense MLP module relative to the layer (`mlp`, `feed_forward`), for dense layers. */
  denseMlp?: string
}

/** Roles of per-expert projections, by the names the hub uses. */
const PER_EXPERT_ROLES = {
  gate: ['gate_proj', 'w1'],
  up: ['up_proj', 'w3'],
  down: ['down_proj', 'w2'],
} as const

const LAYER_PREFIX = /^(.*?)(layers|blocks)\.(\d+)\./

/** Finds the prefix under which decoder layers live (`model.layers.`, `model.language_model.layers.` …). */
export function findLayerPrefix(tensors: readonly TensorHeader[]): string {
  const counts = new Map<string, number>()
  for (const tensor of tensors) {
    const match = LAYER_PREFIX.exec(tensor.name)
    if (!match) continue
    const prefix = `${match[1]}${match[2]}.`
    counts.set(prefix, (counts.get(prefix) ?? 0) + 1)
  }
  // Vision, audio and speech towers have layers too, and so does Qwen3-Omni's talker: the text model is the
  // stack with the most tensors among those that are none of these.
  const tower = (prefix: string): boolean => /(^|\.)(visual|vision\w*|audio\w*|talker|code2wav|speech\w*|image\w*)(\.|$)/.test(prefix)
  let best: string | undefined
  for (const [prefix, count] of counts) {
    const better = best === undefined || tower(best) > tower(prefix) || (tower(best) === tower(prefix) && count > (counts.get(best) ?? 0))
    if (better) best = prefix
  }
  if (best === undefined) {
    throw new MoeQuantError('E_LAYOUT_UNRECOGNISED', 'no decoder layers found: no tensor name contains "layers.<n>."')
  }
  return best
}

const fmt = (shape: readonly number[]): string => `[${shape.join(', ')}]`

function fail(code: ConstructorParameters<typeof MoeQuantError>[0], message: string, tensor?: TensorHeader): never {
  throw new MoeQuantError(code, message, tensor ? { tensor: tensor.name, shape: tensor.shape, file: tensor.file } : {})
}

/** Detects every decoder layer's structure. */
export function detectLayers(tensors: readonly TensorHeader[], config: TextConfig): DetectedLayer[] {
  const layersPrefix = findLayerPrefix(tensors)
  const byLayer = new Map<number, Map<string, TensorHeader>>()
  for (const tensor of tensors) {
    if (!tensor.name.startsWith(layersPrefix)) continue
    const rest = tensor.name.slice(layersPrefix.length)
    const dot = rest.indexOf('.')
    const index = Number(rest.slice(0, dot))
    if (!Number.isInteger(index)) continue
    let layer = byLayer.get(index)
    if (!layer) byLayer.set(index, (layer = new Map()))
    layer.set(rest.slice(dot + 1), tensor)
  }
  // The declared layer count is checked against the tensors before anything loops over it: the first
  // missing layer is found in at most (layers present + 1) steps, however large the config's count.
  let present = 0
  while (present < config.numLayers && byLayer.has(present)) present++
  if (present < config.numLayers) {
    fail('E_LAYOUT_MISSING_TENSOR', `config.json declares ${config.numLayers} layers but no tensor starts with ${layersPrefix}${present}.`)
  }
  const layers: DetectedLayer[] = []
  for (let index = 0; index < config.numLayers; index++) {
    layers.push(detectLayer(index, `${layersPrefix}${index}.`, byLayer.get(index) as Map<string, TensorHeader>, config))
  }
  return layers
}

function detectLayer(index: number, prefix: string, relative: Map<string, TensorHeader>, config: TextConfig): DetectedLayer {
  const experts = detectExperts(prefix, relative, config)
  if (!experts) {
    const denseMlp = ['mlp', 'feed_forward', 'block_sparse_moe'].find(
      (m) => relative.has(`${m}.gate_proj.weight`) || relative.has(`${m}.up_proj.weight`) || relative.has(`${m}.down_proj.weight`),
    )
    return { index, prefix, kind: denseMlp ? 'dense' : 'none', ...(denseMlp ? { denseMlp } : {}) }
  }
  const router = detectRouter(prefix, relative, experts)
  const sharedExperts = detectSharedExperts(relative, experts)
  return { index, prefix, kind: 'moe', experts, router, ...(sharedExperts ? { sharedExperts } : {}) }
}

function expectedExpertCount(config: TextConfig, found: number, tensor: TensorHeader, what: string): number {
  if (config.numExperts === undefined) {
    fail('E_CONFIG_INVALID', `${what} holds ${found} experts but config.json gives no expert count (num_experts, num_local_experts or n_routed_experts)`, tensor)
  }
  if (found !== config.numExperts) {
    fail(
      'E_LAYOUT_EXPERT_COUNT',
      `${what} holds ${found} experts but config.json says ${config.numExperts}`,
      tensor,
    )
  }
  return found
}

function checkIntermediate(config: TextConfig, intermediate: number, tensor: TensorHeader): void {
  const candidates = config.expertIntermediateCandidates
  if (candidates.length > 0 && !candidates.includes(intermediate)) {
    fail(
      'E_LAYOUT_SHAPE',
      `${tensor.name} ${fmt(tensor.shape)} gives an expert intermediate size of ${intermediate}, but config.json says ${candidates.join(' or ')}`,
      tensor,
    )
  }
}

/**
 * Whether a rank-3 tensor may hold routed experts: one under an `experts` module (its shape is then checked
 * strictly, naming what disagrees), or one whose leading dimension is the configured expert count and which
 * has a dimension equal to hidden_size. Convolution kernels of Mamba and linear-attention mixers
 * (`conv1d.weight [C, 1, K]`), decay buffers and position tables are not, and neither are shared experts.
 */
function isExpertCandidate(name: string, tensor: TensorHeader, config: TextConfig): boolean {
  if (/(^|\.)shared_experts?\./.test(name)) return false
  if (/(^|\.)experts\.[^.]+$/.test(name) || /(^|\.)experts\.[^.]+\.weight$/.test(name)) return true
  const [experts, a, b] = tensor.shape as [number, number, number]
  return experts === config.numExperts && (a === config.hiddenSize || b === config.hiddenSize)
}

function detectExperts(prefix: string, relative: Map<string, TensorHeader>, config: TextConfig): DetectedExperts | undefined {
  const perExpert = new Map<string, Map<string, Map<number, TensorHeader>>>() // block → proj → e → tensor
  const fused = new Map<string, TensorHeader[]>() // block → rank-3 tensors
  for (const [name, tensor] of relative) {
    const match = /^(?:(.+?)\.)?experts\.(\d+)\.([^.]+)\.weight$/.exec(name)
    if (match) {
      const [, block = '', e, proj] = match as unknown as [string, string | undefined, string, string]
      let projections = perExpert.get(block)
      if (!projections) perExpert.set(block, (projections = new Map()))
      let byExpert = projections.get(proj)
      if (!byExpert) projections.set(proj, (byExpert = new Map()))
      byExpert.set(Number(e), tensor)
      continue
    }
    if (tensor.shape.length === 3 && isExpertCandidate(name, tensor, config)) {
      const module = name.replace(/\.weight$/, '').split('.').slice(0, -1).join('.')
      const block = module.replace(/(^|\.)experts$/, '')
      const list = fused.get(block) ?? []
      list.push(tensor)
      fused.set(block, list)
    }
  }
  if (perExpert.size + fused.size === 0) return undefined
  if (perExpert.size + fused.size > 1) {
    const blocks = [...perExpert.keys(), ...fused.keys()].map((b) => prefix + b)
    fail('E_LAYOUT_UNRECOGNISED', `${prefix}: expert tensors found in more than one block (${blocks.join(', ')})`)
  }
  const [perBlock] = perExpert.entries()
  if (perBlock) return detectPerExpert(prefix, perBlock[0], perBlock[1], config)
  const [fusedBlock] = fused.entries()
  if (!fusedBlock) return undefined
  return detectFused(prefix, fusedBlock[0], fusedBlock[1], relative, config)
}

function detectPerExpert(
  prefix: string,
  block: string,
  projections: Map<string, Map<number, TensorHeader>>,
  config: TextConfig,
): DetectedExperts {
  const where = `${prefix}${block}.experts`
  const role = (names: readonly string[]): [string, Map<number, TensorHeader>] | undefined => {
    for (const name of names) {
      const byExpert = projections.get(name)
      if (byExpert) return [name, byExpert]
    }
    return undefined
  }
  const gate = role(PER_EXPERT_ROLES.gate)
  const up = role(PER_EXPERT_ROLES.up)
  const down = role(PER_EXPERT_ROLES.down)
  const known = new Set<string>(Object.values(PER_EXPERT_ROLES).flat())
  const unknown = [...projections.keys()].filter((p) => !known.has(p))
  // Ungated experts (Nemotron-H's relu²) have up and down only.
  const ungated = !gate && projections.size === 2
  if ((!gate && !ungated) || !up || !down || unknown.length > 0) {
    fail(
      'E_LAYOUT_UNRECOGNISED',
      `${where}: per-expert projections [${[...projections.keys()].join(', ')}] are not gate_proj/up_proj/down_proj nor w1/w3/w2 (nor up_proj/down_proj without a gate)`,
    )
  }
  const roles = gate ? [gate, up, down] : [up, down]
  const indices = new Set<number>()
  for (const byExpert of projections.values()) for (const e of byExpert.keys()) indices.add(e)
  // A loop, not Math.max(...indices): spreading a million indices overflows the call stack.
  let count = 0
  for (const e of indices) count = Math.max(count, e + 1)
  for (const [name, byExpert] of roles) {
    for (let e = 0; e < count; e++) {
      if (!byExpert.has(e)) fail('E_LAYOUT_MISSING_TENSOR', `${where}.${e}.${name}.weight is missing (experts 0..${count - 1} exist)`)
    }
  }
  // The first projection that reads the input (gate, or up when there is no gate) gives I.
  const lead = (gate ?? up)[1].get(0) as TensorHeader
  expectedExpertCount(config, count, lead, where)
  const hidden = config.hiddenSize
  const intermediate = perExpertIntermediate(lead, hidden)
  checkIntermediate(config, intermediate, lead)
  const expect = (byExpert: Map<number, TensorHeader>, shape: [number, number], label: string): void => {
    for (const tensor of byExpert.values()) {
      const [a, b] = tensor.shape
      if (tensor.shape.length === 2 && a === shape[0] && b === shape[1]) continue
      if (tensor.shape.length === 2 && a === shape[1] && b === shape[0]) {
        fail('E_LAYOUT_ORIENTATION', `${tensor.name} is ${fmt(tensor.shape)}; expected ${label} ${fmt(shape)} (stored transposed)`, tensor)
      }
      fail('E_LAYOUT_SHAPE', `${tensor.name} is ${fmt(tensor.shape)}; expected ${label} ${fmt(shape)} like ${lead.name}`, tensor)
    }
  }
  if (gate) expect(gate[1], [intermediate, hidden], '[I, H]')
  expect(up[1], [intermediate, hidden], '[I, H]')
  expect(down[1], [hidden, intermediate], '[H, I]')
  const tensors: ExpertTensorNames = { up: `experts.{e}.${up[0]}.weight`, down: `experts.{e}.${down[0]}.weight` }
  if (gate) tensors.gate = `experts.{e}.${gate[0]}.weight`
  return { kind: 'per_expert', block, experts: count, hidden, intermediate, tensors }
}

/** I from the first input projection of expert 0 (`[I, H]`), refusing one stored `[H, I]` or without H. */
function perExpertIntermediate(lead: TensorHeader, hidden: number): number {
  if (lead.shape.length !== 2) fail('E_LAYOUT_SHAPE', `${lead.name} ${fmt(lead.shape)} is not 2-D`, lead)
  const [out, input] = lead.shape as [number, number]
  if (input !== hidden) {
    if (out === hidden) {
      fail('E_LAYOUT_ORIENTATION', `${lead.name} is ${fmt(lead.shape)} = [H, I]; expected [I, H] with H = ${hidden} (nn.Linear's [out, in])`, lead)
    }
    fail('E_LAYOUT_SHAPE', `${lead.name} ${fmt(lead.shape)} does not have hidden_size ${hidden} as its input dimension`, lead)
  }
  return out
}

/**
 * The expert count of a pair of stacks (the first one and down, which must agree and match config.json) and
 * their orientation, which down gives: `[E, H, I]` standard, `[E, I, H]` transposed; `whenSquare` decides when
 * I == H.
 */
function stackPair(first: TensorHeader, down: TensorHeader, config: TextConfig, whenSquare: () => boolean): { experts: number; transposed: boolean; intermediate: number } {
  const hidden = config.hiddenSize
  const [experts] = first.shape as [number]
  const [downExperts, x, y] = down.shape as [number, number, number]
  if (downExperts !== experts) {
    fail('E_LAYOUT_SHAPE', `${first.name} ${fmt(first.shape)} and ${down.name} ${fmt(down.shape)} disagree on the expert count`, down)
  }
  expectedExpertCount(config, experts, first, first.name)
  let transposed: boolean
  if (x === hidden && y !== hidden) transposed = false
  else if (y === hidden && x !== hidden) transposed = true
  else if (x === hidden && y === hidden) transposed = whenSquare()
  else fail('E_LAYOUT_SHAPE', `${down.name} ${fmt(down.shape)} has no dimension equal to hidden_size ${hidden}`, down)
  return { experts, transposed, intermediate: transposed ? x : y }
}

function detectFused(
  prefix: string,
  block: string,
  rank3: TensorHeader[],
  relative: Map<string, TensorHeader>,
  config: TextConfig,
): DetectedExperts {
  const where = `${prefix}${block}`
  const leaf = (t: TensorHeader): string => t.name.slice(t.name.lastIndexOf('.', t.name.endsWith('.weight') ? t.name.length - 8 : t.name.length) + 1).replace(/\.weight$/, '')
  const leaves = rank3.map(leaf).sort().join(',')
  if (leaves === 'down_proj,up_proj') return detectFusedUngated(prefix, block, rank3, relative, config)
  if (leaves === 'down_proj,gate_proj,up_proj') {
    fail('E_MODEL_UNSUPPORTED', `${where}: experts stored as three stacked tensors (gate_proj, up_proj, down_proj [E, …] each) are not read yet`)
  }
  if (rank3.length !== 2) {
    fail(
      'E_LAYOUT_UNRECOGNISED',
      `${where}: expected two fused expert tensors (gate/up and down), found ${rank3.length}: ${rank3.map((t) => `${t.name} ${fmt(t.shape)}`).join(', ')}`,
    )
  }
  const isDown = (t: TensorHeader): boolean => /(^|[._])(down|output|w2)([._]|$)/.test(t.name.slice(prefix.length + block.length))
  let [gateUp, down] = rank3 as [TensorHeader, TensorHeader]
  if (isDown(gateUp) && !isDown(down)) [gateUp, down] = [down, gateUp]
  else if (isDown(gateUp) === isDown(down)) {
    // Names do not tell: the gate/up tensor is the one with twice the elements.
    const size = (t: TensorHeader): number => t.shape.reduce((a, b) => a * b, 1)
    if (size(down) === 2 * size(gateUp)) [gateUp, down] = [down, gateUp]
  }
  const hidden = config.hiddenSize
  const [, p, q] = gateUp.shape as [number, number, number]
  // I == H: gate/up decides.
  const { experts, transposed, intermediate } = stackPair(gateUp, down, config, () => q !== hidden)
  const [gateUpHidden, gateUpDouble] = transposed ? [p, q] : [q, p]
  const expected = transposed ? `[E, H, 2I] = [${experts}, ${hidden}, ${2 * intermediate}]` : `[E, 2I, H] = [${experts}, ${2 * intermediate}, ${hidden}]`
  if (gateUpHidden !== hidden) {
    if (gateUpDouble === hidden) {
      fail('E_LAYOUT_ORIENTATION', `${gateUp.name} is ${fmt(gateUp.shape)} but ${down.name} ${fmt(down.shape)} implies ${expected} (stored transposed)`, gateUp)
    }
    fail('E_LAYOUT_SHAPE', `${gateUp.name} ${fmt(gateUp.shape)} does not have hidden_size ${hidden} where ${expected} puts it`, gateUp)
  }
  if (gateUpDouble % 2 !== 0) {
    fail('E_LAYOUT_ODD_SPLIT', `${gateUp.name} ${fmt(gateUp.shape)}: the gate/up dimension ${gateUpDouble} is odd, so it cannot hold equal gate and up halves`, gateUp)
  }
  if (gateUpDouble !== 2 * intermediate) {
    fail('E_LAYOUT_SHAPE', `${gateUp.name} ${fmt(gateUp.shape)} holds gate/up of ${gateUpDouble / 2} each but ${down.name} ${fmt(down.shape)} has I = ${intermediate}; expected ${expected}`, gateUp)
  }
  checkIntermediate(config, intermediate, down)

  const blockPrefix = block ? `${block}.` : ''
  const rel = (t: TensorHeader): string => t.name.slice(prefix.length + blockPrefix.length)
  const tensors: DetectedExperts['tensors'] = { gateUp: rel(gateUp), down: rel(down) }
  for (const [name, tensor] of relative) {
    if (!name.startsWith(blockPrefix) || tensor.shape.length !== 2 || !/bias$/.test(name)) continue
    const [e, n] = tensor.shape as [number, number]
    if (e !== experts) continue
    const local = name.slice(blockPrefix.length)
    if (n === 2 * intermediate && local.startsWith(rel(gateUp))) tensors.gateUpBias = local
    else if (n === hidden && local.startsWith(rel(down))) tensors.downBias = local
  }
  return { kind: transposed ? 'fused_transposed' : 'fused', block, experts, hidden, intermediate, tensors }
}

/**
 * Ungated experts stored as two stacks (transformers 5's Nemotron-H): `up_proj [E, I, H]` and
 * `down_proj [E, H, I]`, or both transposed (`[E, H, I]`, `[E, I, H]`); down gives the orientation. Nothing
 * else may sit in the experts module.
 */
function detectFusedUngated(prefix: string, block: string, rank3: TensorHeader[], relative: Map<string, TensorHeader>, config: TextConfig): DetectedExperts {
  // Anything else in an experts module (ERGO's per-expert output norm) changes what an expert computes.
  const module = rank3[0]?.name.slice(prefix.length).replace(/\.[^.]+(\.weight)?$/, '') as string
  const inExperts = /(^|\.)experts$/.test(module)
  const others = [...relative.keys()].filter((name) => inExperts && name.startsWith(`${module}.`) && !rank3.some((t) => t.name === prefix + name))
  if (others.length > 0) {
    fail('E_MODEL_UNSUPPORTED', `${prefix}${module}: ungated experts with more than up_proj and down_proj (${others.join(', ')}) are not read`)
  }
  const isDown = (t: TensorHeader): boolean => /(^|\.)down_proj(\.weight)?$/.test(t.name)
  const down = rank3.find(isDown) as TensorHeader
  const up = rank3.find((t) => !isDown(t)) as TensorHeader
  const hidden = config.hiddenSize
  const [, p, q] = up.shape as [number, number, number]
  // I == H: either reading gives the same shapes.
  const { experts, transposed, intermediate } = stackPair(up, down, config, () => false)
  const [upIntermediate, upHidden] = transposed ? [q, p] : [p, q]
  const expected = transposed ? `[E, H, I] = [${experts}, ${hidden}, ${intermediate}]` : `[E, I, H] = [${experts}, ${intermediate}, ${hidden}]`
  if (upHidden !== hidden || upIntermediate !== intermediate) {
    if (upIntermediate === hidden && upHidden === intermediate) {
      fail('E_LAYOUT_ORIENTATION', `${up.name} is ${fmt(up.shape)} but ${down.name} ${fmt(down.shape)} implies ${expected} (stored transposed)`, up)
    }
    fail('E_LAYOUT_SHAPE', `${up.name} ${fmt(up.shape)} does not match ${down.name} ${fmt(down.shape)}; expected ${expected}`, up)
  }
  checkIntermediate(config, intermediate, down)
  const rel = (t: TensorHeader): string => t.name.slice(prefix.length + (block ? block.length + 1 : 0))
  return { kind: transposed ? 'fused_transposed' : 'fused', block, experts, hidden, intermediate, tensors: { up: rel(up), down: rel(down) } }
}

function detectRouter(prefix: string, relative: Map<string, TensorHeader>, experts: DetectedExperts): DetectedRouter {
  const blockPrefix = experts.block ? `${experts.block}.` : ''
  const candidates: string[] = []
  const extra: string[] = []
  for (const [name, tensor] of relative) {
    if (!name.startsWith(blockPrefix) || !name.endsWith('.weight')) continue
    const local = name.slice(blockPrefix.length)
    if (/(^|\.)(experts|shared_experts?)\./.test(local)) continue
    const [e, h] = tensor.shape
    if (tensor.shape.length === 2 && e === experts.experts && h === experts.hidden) candidates.push(local)
    // A few extra rows: zero-computation experts (LongCat) or a sink logit (Inkling), under a router's name.
    else if (tensor.shape.length === 2 && h === experts.hidden && (e as number) > experts.experts && (e as number) <= 2 * experts.experts && /(^|\.)(gate|router)(\.|$)/.test(local)) {
      extra.push(local)
    }
  }
  if (candidates.length === 0 && extra.length === 1) candidates.push(extra[0] as string)
  if (candidates.length !== 1) {
    fail(
      'E_LAYOUT_UNRECOGNISED',
      candidates.length === 0
        ? `${prefix}${experts.block}: no router weight [${experts.experts}, ${experts.hidden}] found beside the experts`
        : `${prefix}${experts.block}: several router candidates: ${candidates.join(', ')}`,
    )
  }
  const weight = candidates[0] as string
  const rows = relative.get(`${blockPrefix}${weight}`)?.shape[0]
  const module = weight.replace(/\.weight$/, '')
  const router: DetectedRouter = { weight }
  if (relative.has(`${blockPrefix}${module}.bias`)) router.bias = `${module}.bias`
  // The bias that only chooses experts, under the names hub checkpoints use for it: beside the router weight, on
  // the module holding the router's linear (LongCat's `router` around its `classifier`), on the block, on the experts
  // module, or in ERNIE's `moe_statics` as [1, E] (transformers 5 renames all of them e_score_correction_bias).
  const leaves = ['e_score_correction_bias', 'expert_bias', 'moe_statics.e_score_correction_bias']
  const holder = module.includes('.') ? [module.slice(0, module.lastIndexOf('.'))] : []
  const correction = leaves.flatMap((leaf) => [`${module}.${leaf}`, ...holder.map((h) => `${h}.${leaf}`), `gate.${leaf}`, leaf, `experts.${leaf}`])
  for (const candidate of correction) {
    const tensor = relative.get(`${blockPrefix}${candidate}`)
    const shape = tensor?.shape.length === 2 && tensor.shape[0] === 1 ? tensor.shape.slice(1) : tensor?.shape
    // One per expert, or one per router row (LongCat's zero experts are scored and biased too).
    if (shape && shape.length === 1 && (shape[0] === experts.experts || shape[0] === rows)) {
      router.correctionBias = candidate
      break
    }
  }
  return router
}

/** Module names of shared experts, and the projections that give their intermediate size (rows, or rows / 2 for a fused gate/up). */
const SHARED_MODULES = ['shared_expert', 'shared_experts', 'shared_mlp', 'share_expert']
const SHARED_PROJECTIONS: ReadonlyArray<[string, number]> = [['up_proj', 1], ['gate_proj', 1], ['w3', 1], ['w1', 1], ['gate_up_proj', 2], ['input_linear', 2], ['shared_w13_weight', 2]]

/**
 * Shared experts (every token goes through them) under any name in use, inside the MoE block or beside it in
 * the decoder layer, with their sigmoid gate (`<module>_gate`) when present.
 */
function detectSharedExperts(relative: Map<string, TensorHeader>, experts: DetectedExperts): DetectedSharedExperts | undefined {
  const blockPrefix = experts.block ? `${experts.block}.` : ''
  for (const [prefix, atLayer] of [[blockPrefix, false], ['', true]] as const) {
    if (atLayer && prefix === blockPrefix) continue
    for (const module of SHARED_MODULES) {
      for (const [projection, per] of SHARED_PROJECTIONS) {
        const tensor = relative.get(`${prefix}${module}.${projection}.weight`)
        // Or stored like routed experts, one of them: `[1, I, H]` without `.weight` (Inkling).
        const single = relative.get(`${prefix}${module}.${projection}`)
        const rows = tensor?.shape.length === 2 ? tensor.shape[0] : single?.shape.length === 3 && single.shape[0] === 1 ? single.shape[1] : undefined
        if (rows === undefined) continue
        const shared: DetectedSharedExperts = { module, intermediate: rows / per }
        if (atLayer) shared.atLayer = true
        if (relative.has(`${prefix}${module}_gate.weight`)) shared.gate = `${module}_gate.weight`
        return shared
      }
    }
  }
  return undefined
}
