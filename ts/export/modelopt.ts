/**
 * The quantization metadata ModelOpt 0.47's `export_hf_checkpoint` writes, reproduced byte for byte (SPEC §5):
 * the `exclude_modules` list with its prefix wildcards, `hf_quant_config.json`, and config.json with its
 * `quantization_config`. Pure functions, no I/O; the golden exports in fixtures/golden/ pin every byte.
 *
 * Sources in nvidia-modelopt 0.47.0 (modelopt/torch/export/):
 * - quant_utils.py `_prefix_wildcard_summarize_exclude_modules`, `process_layer_quant_config`, `get_quant_config`
 * - convert_hf_config.py `convert_hf_quant_config_format`
 * - unified_export_hf.py `_write_hf_export_config`; plugins/hf_checkpoint_utils.py `sanitize_hf_config_for_deployment`
 */
import { MoeQuantError } from '../errors'
import { FORMAT_NAMES, type FormatFacts, FORMATS, type QuantFormatName } from '../formats'
import { type KvCacheMode, kvCacheQuantAlgo, kvCacheScheme } from './kv-cache'
import { dumpPyJson, parsePyJson, PyInt, sortKeysDeep, toPyJson, type PyJson, type PyObject } from './python-json'

/** The ModelOpt release whose export format we follow; written as `producer.version`. */
export const MODELOPT_VERSION = '0.47.0'

/**
 * Compresses the names of unquantized modules into ModelOpt's `exclude_modules` list.
 *
 * `unquantized` are modules ModelOpt lists at all: linears (and embeddings, conv1d) whose quantizers are
 * disabled, plus MoE routers (`gate`, `router`, `shared_expert_gate`); never norms. `quantized` are the
 * modules with quantized weights. For each unquantized name, in the order ModelOpt tries them, the first
 * candidate that no quantized module could match wins:
 *   for each `.` from the left, with `prefix` the text before it: `prefix*` (rejected if a quantized name
 *   starts with `prefix`), then the pair `prefix` + `prefix.*` (rejected if a quantized name equals `prefix`
 *   or starts with `prefix.`), written as just `prefix.*`; finally the exact name (rejected if quantized, in
 *   which case the module is not listed).
 * The result is deduplicated and sorted by code unit, as Python's `sorted()` sorts these ASCII names.
 *
 * @example
 *   excludeModules(['lm_head', 'model.layers.0.mlp.gate'], ['model.layers.0.mlp.experts.0.gate_proj'])
 *   // → ['lm_head', 'model.layers.0.mlp.gate']
 *   excludeModules(['visual.blocks.0.attn.qkv', 'visual.merger.mlp.0'], ['model.layers.0.self_attn.q_proj'])
 *   // → ['visual*']
 */
export function excludeModules(unquantized: readonly string[], quantized: Iterable<string>): string[] {
  // Every prefix of a quantized name, the name itself included: a candidate `p*` is invalid iff p is here.
  const quantizedPrefixes = new Set<string>()
  const quantizedNames = new Set<string>()
  for (const name of quantized) {
    quantizedNames.add(name)
    for (let i = 0; i <= name.length; i++) quantizedPrefixes.add(name.slice(0, i))
  }
  const listed = new Set<string>()
  for (const name of unquantized) {
    const pattern = firstValidPattern(name, quantizedPrefixes, quantizedNames)
    if (pattern !== undefined) listed.add(pattern)
  }
  return [...listed].sort()
}

function firstValidPattern(name: string, quantizedPrefixes: Set<string>, quantizedNames: Set<string>): string | undefined {
  for (let i = 0; i < name.length; i++) {
    if (name[i] !== '.') continue
    const prefix = name.slice(0, i)
    if (!quantizedPrefixes.has(prefix)) return `${prefix}*`
    if (!quantizedNames.has(prefix) && !quantizedPrefixes.has(`${prefix}.`)) return `${prefix}.*`
  }
  return quantizedNames.has(name) ? undefined : name
}

/**
 * The module lists `excludeModules` needs, read off the tensor names of an exported (hub-named) checkpoint:
 * a module is quantized iff it has a `weight_scale`, or a `<parameter>_weight_scale` for experts stored as
 * stacked parameters (GPT-OSS's `experts.gate_up_proj_weight_scale`); it is listed as unquantized iff it owns a
 * `weight`, is not quantized and is not a norm (ModelOpt puts no quantizer on norms, so never lists them).
 */
export function moduleLists(tensorNames: Iterable<string>): { quantized: string[]; unquantized: string[] } {
  const quantized = new Set<string>()
  const withWeight = new Set<string>()
  for (const tensor of tensorNames) {
    const dot = tensor.lastIndexOf('.')
    if (dot < 0) continue
    const module = tensor.slice(0, dot)
    const leaf = tensor.slice(dot + 1)
    if (leaf === 'weight_scale' || leaf.endsWith('_weight_scale')) quantized.add(module)
    else if (leaf === 'weight') withWeight.add(module)
  }
  const unquantized = [...withWeight].filter((m) => !quantized.has(m) && listedWhenUnquantized(m))
  return { quantized: [...quantized].sort(), unquantized: unquantized.sort() }
}

/** Norm modules (`input_layernorm`, `q_norm`, `model.norm`, `ln_f` …) by their last name component that is not an index
 * (LongCat-Flash's norms are lists: `input_layernorm.0`). */
export function isNorm(module: string): boolean {
  const names = module.split('.').filter((part) => !/^\d+$/.test(part))
  const leaf = names[names.length - 1] ?? ''
  return /norm/i.test(leaf) || /^ln(_|$)/.test(leaf)
}

/**
 * Whether ModelOpt lists a module with an unquantized weight in `exclude_modules`: not a norm (it puts no
 * quantizer on norms), and not a convolution whose quantizers stay enabled. ModelOpt quantizes every Conv1d but
 * disables those its default patterns name (`*mixer.conv1d*`, `*linear_attn.conv1d*`, `*self_attention.conv1d*`),
 * which it lists; another one (Granite-4.0-H's and Jamba's `mamba.conv1d`, LFM2's short convolution `conv.conv`)
 * keeps enabled quantizers that its export of linears leaves unused, and is not listed.
 */
export function listedWhenUnquantized(module: string): boolean {
  if (isNorm(module)) return false
  const convolution = module.endsWith('.conv1d') || module.endsWith('.conv.conv')
  return !convolution || /(mixer|linear_attn|self_attention)\.conv1d$/.test(module)
}

/** The facts of `format`; these pure functions are also called from JavaScript, where the type guards nothing. */
function checkFormat(format: QuantFormatName): FormatFacts {
  if (typeof format !== 'string' || !Object.hasOwn(FORMATS, format)) {
    throw new TypeError(`format: expected ${FORMAT_NAMES.map((f) => `'${f}'`).join(' or ')}, got ${JSON.stringify(format)}`)
  }
  return FORMATS[format]
}

/** Who wrote the checkpoint, recorded beside ModelOpt's `producer` (engines read only `producer`). */
export interface ToolInfo {
  name: string
  version: string
}

/**
 * The content of `hf_quant_config.json`, keys in ModelOpt's order. Write it with `dumpPyJson` (4-space
 * indent, no trailing newline). `tool`, when given, adds a top-level `"quantizer"` key after ModelOpt's two;
 * `kvCache` sets `kv_cache_quant_algo` (export/kv-cache.ts).
 */
export function hfQuantConfig(
  format: QuantFormatName,
  exclude: readonly string[],
  version: string = MODELOPT_VERSION,
  tool?: ToolInfo,
  kvCache: KvCacheMode = 'none',
): Record<string, unknown> {
  const facts = checkFormat(format)
  const quantization: Record<string, unknown> = { quant_algo: facts.quantAlgo, kv_cache_quant_algo: kvCacheQuantAlgo(kvCache) }
  if (facts.groupSize !== null && facts.writesGroupSize) quantization.group_size = facts.groupSize
  // ModelOpt's AWQ formats: symmetric INT4 (no zero point), inputs smoothed by `pre_quant_scale`.
  if (facts.awq) Object.assign(quantization, { has_zero_point: false, pre_quant_scale: true })
  quantization.exclude_modules = [...exclude]
  const config: Record<string, unknown> = { producer: { name: 'modelopt', version }, quantization }
  if (tool) config.quantizer = { name: tool.name, version: tool.version }
  return config
}

/** config.json's `quantization_config` (`convert_hf_quant_config_format`), keys in ModelOpt's order; a quantized
 * `kvCache` adds its `kv_cache_scheme` after `quant_algo`. */
export function quantizationConfig(
  format: QuantFormatName,
  exclude: readonly string[],
  version: string = MODELOPT_VERSION,
  kvCache: KvCacheMode = 'none',
): Record<string, unknown> {
  const facts = checkFormat(format)
  const args = { dynamic: false, num_bits: facts.bits, type: 'float', ...(facts.groupSize === null ? {} : { group_size: facts.groupSize }) }
  const groups: Record<string, Record<string, unknown>> = {
    weights_and_inputs: { config_groups: { group_0: { input_activations: { ...args }, weights: { ...args }, targets: ['Linear'] } } },
    weights: { config_groups: { group_0: { weights: { ...args }, targets: ['Linear'] } } },
    none: {},
  }
  return {
    ...groups[facts.configGroups],
    ignore: [...exclude],
    quant_algo: facts.quantAlgo,
    ...(kvCacheScheme(kvCache) === undefined ? {} : { kv_cache_scheme: kvCacheScheme(kvCache) }),
    producer: { name: 'modelopt', version },
    quant_method: 'modelopt',
  }
}

/**
 * The output config.json, as ModelOpt writes it from the input's. The export saves the model with
 * transformers (`json.dumps(indent=2, sort_keys=True)`: every object's keys sorted), reads that back, applies
 * `sanitize_hf_config_for_deployment` (a llama3 rope config without `rope_theta` gets the top-level one;
 * `layer_types` longer than `num_hidden_layers` by exactly `num_nextn_predict_layers` is cut to length), sets
 * `quantization_config` last, and writes `json.dump(indent=4)`: 4-space indent, ASCII, Python's number
 * spelling (`1e-05`, `10000.0`), no trailing newline. A `quantization_config` already in the input (an FP8
 * source that was dequantized on load) is dropped first, as transformers does when it dequantizes.
 *
 * What this cannot reproduce: fields transformers itself adds, drops or renames when it loads and saves a
 * config (`transformers_version`, defaults, legacy spellings). For configs saved by transformers 5 the
 * output equals ModelOpt's byte for byte.
 *
 * @throws MoeQuantError `E_CONFIG_INVALID` when the input is not a JSON object.
 */
export function outputConfigJson(inputConfigText: string, quantizationConfigValue: Record<string, unknown>, source = 'config.json'): string {
  const parsed = parsePyJson(inputConfigText, source)
  if (!(parsed instanceof Map)) return invalid(source)
  const config = sortKeysDeep(parsed) as PyObject
  config.delete('quantization_config')
  sanitizeForDeployment(config)
  config.set('quantization_config', toPyJson(quantizationConfigValue))
  return dumpPyJson(config)
}

function invalid(source: string): never {
  throw new MoeQuantError('E_CONFIG_INVALID', `${source}: expected a JSON object`, { file: source })
}

const asCount = (value: PyJson | undefined): number | undefined =>
  value instanceof PyInt && !value.digits.startsWith('-') ? Number(value.digits) : undefined

/** `sanitize_hf_config_for_deployment`, on what config.json itself says (ModelOpt also asks the live model). */
function sanitizeForDeployment(config: PyObject): void {
  const ropeTheta = config.get('rope_theta')
  if (ropeTheta !== undefined && ropeTheta !== null) {
    for (const key of ['rope_parameters', 'rope_scaling']) {
      const rope = config.get(key)
      if (!(rope instanceof Map)) continue
      const type = rope.has('rope_type') ? rope.get('rope_type') : rope.get('type')
      if (type === 'llama3' && !rope.has('rope_theta')) rope.set('rope_theta', ropeTheta)
    }
  }
  const layers = asCount(config.get('num_hidden_layers'))
  const layerTypes = config.get('layer_types')
  if (layers === undefined || !Array.isArray(layerTypes) || layerTypes.length <= layers) return
  const nextn = asCount(config.get('num_nextn_predict_layers'))
  if (nextn !== undefined && nextn === layerTypes.length - layers) config.set('layer_types', layerTypes.slice(0, layers))
}
