/**
 * Mixed precision: a recipe gives modules other formats than the run's (ModelOpt's `MIXED_PRECISION`), as data: an
 * ordered list of rules, each a module-name pattern and a format (or `null`: keep the module in 16 bits); a module
 * takes the format of the last rule that matches it, else the run's `format`. Linears are matched by their output
 * module name (`model.layers.0.self_attn.q_proj`), a layer's routed experts by their module
 * (`model.layers.0.mlp.experts`), as hf_quant_config.json's `quantized_layers` names them.
 *
 * And the metadata ModelOpt 0.47 writes for such a checkpoint (quant_utils.py `process_layer_quant_config`,
 * convert_hf_config.py `convert_hf_quant_config_format`, `_quant_algo_to_group_config`): one entry per quantized
 * module in `quantized_layers`, in the order the model defines its modules; `MIXED_PRECISION` as soon as two
 * entries differ, and then no `exclude_modules` (unquantized modules are those not listed).
 */
import { MoeQuantError } from '../errors'
import { FORMAT_NAMES, FORMATS, type QuantFormatName } from '../formats'
import { type KvCacheMode, kvCacheQuantAlgo, kvCacheScheme } from './kv-cache'
import { globToRegExp, refuseUnmatched } from './patterns'

export interface RecipeRule {
  /** A module-name pattern, `*` matching any run of characters. */
  modules: string
  /** The modules' format; `null` keeps them unquantized. */
  format: QuantFormatName | null
}

export interface Recipe {
  rules: RecipeRule[]
}

function invalid(source: string, message: string): never {
  throw new MoeQuantError('E_OPTION_INVALID', `${source}: ${message}`)
}

/**
 * A recipe given as data (an object, or the parsed text of a recipe file named by `source`), checked: `rules` a
 * non-empty list of `{ modules, format }`, every pattern a non-empty string, every format one of the formats or null.
 *
 * @throws MoeQuantError `E_OPTION_INVALID` naming the rule and what is wrong with it.
 */
export function parseRecipe(value: unknown, source = 'recipe'): Recipe {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) invalid(source, 'expected an object { "rules": [...] }')
  const unknown = Object.keys(value).filter((key) => key !== 'rules')
  if (unknown.length > 0) invalid(source, `unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')} (a recipe has "rules")`)
  const rules = (value as { rules?: unknown }).rules
  if (!Array.isArray(rules) || rules.length === 0) invalid(source, 'expected "rules", a non-empty list of { "modules": pattern, "format": format or null }')
  const formats = `${FORMAT_NAMES.map((f) => JSON.stringify(f)).join(', ')} or null`
  return {
    rules: rules.map((rule: unknown, i) => {
      const at = `${source}: rules[${i}]`
      if (typeof rule !== 'object' || rule === null || Array.isArray(rule)) invalid(at, 'expected { "modules": pattern, "format": format or null }')
      const extra = Object.keys(rule).filter((key) => key !== 'modules' && key !== 'format')
      if (extra.length > 0) invalid(at, `unknown key${extra.length > 1 ? 's' : ''} ${extra.map((k) => JSON.stringify(k)).join(', ')} (a rule has "modules" and "format")`)
      const { modules, format } = rule as { modules?: unknown; format?: unknown }
      if (typeof modules !== 'string' || modules.trim() === '') invalid(at, `"modules" must be a non-empty pattern, got ${JSON.stringify(modules)}`)
      if (!(format === null || (typeof format === 'string' && (FORMAT_NAMES as readonly string[]).includes(format)))) {
        invalid(at, `"format" must be ${formats}, got ${JSON.stringify(format)}`)
      }
      return { modules, format: format as QuantFormatName | null }
    }),
  }
}

/** Every format a run with this base format and recipe can write. */
export function recipeFormats(format: QuantFormatName, recipe: Recipe | undefined): QuantFormatName[] {
  const formats = new Set<QuantFormatName>([format])
  for (const rule of recipe?.rules ?? []) if (rule.format !== null) formats.add(rule.format)
  return [...formats]
}

/** A recipe applied to module names, remembering which rules matched: a rule that matches nothing is most likely misspelled. */
export class RecipeMatcher {
  private readonly patterns: RegExp[]
  private readonly matched = new Set<number>()

  constructor(private readonly recipe: Recipe) {
    this.patterns = recipe.rules.map((rule) => globToRegExp(rule.modules))
  }

  /** The format of the last rule matching `module` (null: keep it unquantized); undefined when none matches. */
  formatOf(module: string): QuantFormatName | null | undefined {
    for (let i = this.patterns.length - 1; i >= 0; i--) {
      if (!(this.patterns[i] as RegExp).test(module)) continue
      this.matched.add(i)
      return (this.recipe.rules[i] as RecipeRule).format
    }
    return undefined
  }

  /** @throws MoeQuantError `E_OPTION_INVALID` naming the rules that matched no module, with examples of names. */
  refuseUnmatched(modules: readonly string[]): void {
    // A rule shadowed by a later one for every module it matches still matched.
    for (const module of modules) this.patterns.forEach((re, i) => re.test(module) && this.matched.add(i))
    const unmatched = this.recipe.rules.flatMap((rule, i) => (this.matched.has(i) ? [] : [rule.modules]))
    refuseUnmatched('recipe', unmatched, 'quantizable module', modules)
  }
}

/** A module's entry in `quantized_layers`: its `quant_algo`, and `group_size` where ModelOpt writes one. */
export function layerQuantConfig(format: QuantFormatName): Record<string, unknown> {
  const facts = FORMATS[format]
  return { quant_algo: facts.quantAlgo, ...(facts.groupSize !== null && facts.writesGroupSize ? { group_size: facts.groupSize } : {}) }
}

/** Where a module of a decoder layer comes in the order the model defines them: its layer, then the mixer's
 * projections before the feed-forward part's, routed experts before shared ones, q, k, v, o and gate, up, down. */
function definitionOrder(module: string): [number, number, number, string] {
  const layer = /(?:^|\.)(?:layers|blocks|h)\.(\d+)\./.exec(module)
  const rest = layer ? module.slice(layer.index + layer[0].length) : module
  const part = /^(mlp|block_sparse_moe|feed_forward|moe|ffn)\b/.test(rest) ? 1 : 0
  const experts = /(^|\.)experts(\.|$)/.test(rest) ? 0 : /shared_expert/.test(rest) ? 1 : 2
  const leaf = rest.split('.').pop() ?? ''
  const projections = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'w1', 'up_proj', 'w3', 'down_proj', 'w2']
  const rank = projections.indexOf(leaf)
  return [layer ? Number(layer[1]) : -1, part, experts * 100 + (rank < 0 ? 99 : rank), rest]
}

/** `modules` in the order ModelOpt's walk over the model's modules meets them. */
export function inDefinitionOrder(modules: Iterable<string>): string[] {
  const keyed = [...modules].map((module) => [definitionOrder(module), module] as const)
  keyed.sort(([a], [b]) => {
    for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return (a[i] as number) - (b[i] as number)
    return a[3] < b[3] ? -1 : a[3] > b[3] ? 1 : 0
  })
  return keyed.map(([, module]) => module)
}

/**
 * The one format a checkpoint whose quantized modules are `layers` is written in (`fallback` when none is
 * quantized), or null when their entries differ: ModelOpt then writes `MIXED_PRECISION`. A recipe that leaves one
 * format writes that format's files, as ModelOpt does.
 */
export function singleFormat(layers: ReadonlyMap<string, QuantFormatName>, fallback: QuantFormatName): QuantFormatName | null {
  const entries = new Map([...layers.values()].map((format) => [JSON.stringify(layerQuantConfig(format)), format]))
  return entries.size > 1 ? null : ([...entries.values()][0] ?? fallback)
}

/** hf_quant_config.json's `quantized_layers`, in definition order. */
function quantizedLayers(layers: ReadonlyMap<string, QuantFormatName>): Record<string, Record<string, unknown>> {
  return Object.fromEntries(inDefinitionOrder(layers.keys()).map((module) => [module, layerQuantConfig(layers.get(module) as QuantFormatName)]))
}

/** hf_quant_config.json of a `MIXED_PRECISION` checkpoint (`layers`: each quantized module's format), keys in
 * ModelOpt's order; `tool` adds our `"quantizer"` key after ModelOpt's two. */
export function mixedHfQuantConfig(layers: ReadonlyMap<string, QuantFormatName>, version: string, tool: { name: string; version: string } | undefined, kvCache: KvCacheMode): Record<string, unknown> {
  const quantization = { quant_algo: 'MIXED_PRECISION', kv_cache_quant_algo: kvCacheQuantAlgo(kvCache), quantized_layers: quantizedLayers(layers) }
  return { producer: { name: 'modelopt', version }, quantization, ...(tool ? { quantizer: { name: tool.name, version: tool.version } } : {}) }
}

/** A config group's description of a format (`_quant_algo_to_group_config`), before its `targets`. */
function groupBody(format: QuantFormatName): Record<string, unknown> {
  const { quantAlgo, bits, groupSize } = FORMATS[format]
  const args = (numBits: number, extra: Record<string, unknown> = {}) => ({ dynamic: false, num_bits: numBits, type: 'float', ...extra })
  const grouped = groupSize === null ? {} : { group_size: groupSize }
  switch (quantAlgo) {
    case 'FP8':
      return { input_activations: args(8), weights: args(8) }
    case 'FP8_PER_CHANNEL_PER_TOKEN':
      return { input_activations: args(8), weights: args(8, { strategy: 'channel' }) }
    case 'NVFP4':
    case 'MXFP8':
      return { input_activations: args(bits, grouped), weights: args(bits, grouped) }
    case 'W4A16_NVFP4':
      return { weights: args(bits, grouped) }
    default:
      return { quant_algo: quantAlgo }
  }
}

/** config.json's `quantization_config` of a `MIXED_PRECISION` checkpoint: one config group per distinct entry, numbered
 * in order of first appearance, its `targets` the modules sorted by code unit; then the entries themselves. */
export function mixedQuantizationConfig(layers: ReadonlyMap<string, QuantFormatName>, version: string, kvCache: KvCacheMode): Record<string, unknown> {
  const entries = quantizedLayers(layers)
  const groups = new Map<string, { format: QuantFormatName; targets: string[] }>()
  for (const module of Object.keys(entries)) {
    const format = layers.get(module) as QuantFormatName
    const key = JSON.stringify(layerQuantConfig(format))
    const group = groups.get(key) ?? { format, targets: [] }
    group.targets.push(module)
    groups.set(key, group)
  }
  const configGroups = Object.fromEntries(
    [...groups.values()].map(({ format, targets }, i) => [`group_${i}`, { ...groupBody(format), targets: [...targets].sort() }]),
  )
  const scheme = kvCacheScheme(kvCache)
  return {
    config_groups: configGroups,
    quantized_layers: entries,
    ignore: [],
    quant_algo: 'MIXED_PRECISION',
    ...(scheme === undefined ? {} : { kv_cache_scheme: scheme }),
    producer: { name: 'modelopt', version },
    quant_method: 'modelopt',
  }
}
