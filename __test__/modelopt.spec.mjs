// ModelOpt 0.47's quantization metadata (exclude_modules, hf_quant_config.json, config.json), byte for byte
// against the golden exports in fixtures/golden/ (made by tools/make_golden.py with ModelOpt itself).
import test from 'ava'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

import {
  excludeModules,
  hfQuantConfig,
  MODELOPT_VERSION,
  moduleLists,
  outputConfigJson,
  quantizationConfig,
} from '../dist/export/modelopt.js'
import { dumpPyJson, parsePyJson, pyFloatRepr } from '../dist/export/python-json.js'
import { lookupArchitecture } from '../dist/model/registry/index.js'
import { FIXTURES, ROOT, readRaw } from './helpers/checkpoint.mjs'

const GOLDEN = join(FIXTURES, 'golden')
// The calibrated goldens (the weight-only and scope ones sit beside them in some directories; Jamba's fixture has
// no NVFP4 one, which ModelOpt cannot export).
const golden = readdirSync(GOLDEN, { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(GOLDEN, d.name, 'fp8')))
  .flatMap((d) =>
    ['fp8', 'nvfp4'].filter((format) => existsSync(join(GOLDEN, d.name, format))).map((format) => {
      const dir = join(GOLDEN, d.name, format)
      const amax = JSON.parse(readFileSync(join(dir, 'amax.json'), 'utf8'))
      return { name: `${d.name}/${format}`, dir, format, fixture: join(ROOT, amax.fixture) }
    }),
  )

const tensorNames = (dir) => Object.keys(readRaw(join(dir, 'model.safetensors')).header).filter((n) => n !== '__metadata__')
const goldenExclude = (dir) => JSON.parse(readFileSync(join(dir, 'hf_quant_config.json'), 'utf8')).quantization.exclude_modules

test('the golden cases are all there', (t) => {
  t.is(golden.length, 103)
})

// transformers 5.25's reverse renaming of Nemotron-H's hub `backbone.` prefix leaves a sentinel suffix on the module
// names ModelOpt excludes, which it sorted by their in-memory `model.` names: compared without it, as sets.
const SENTINEL = /\.\u0000backbone\.pt_name_sentinel$/
const hasSentinel = (names) => names.some((m) => SENTINEL.test(m))
const cleaned = (names) => names.map((m) => m.replace(SENTINEL, '')).sort()

test('exclude lists of the golden cases, as stated', (t) => {
  const byCase = Object.fromEntries(golden.map((g) => [g.name, goldenExclude(g.dir)]))
  t.deepEqual(byCase['mixtral_hub/fp8'], ['lm_head', 'model.embed_tokens', 'model.layers.0.block_sparse_moe.gate', 'model.layers.1.block_sparse_moe.gate'])
  t.deepEqual(byCase['glm4_moe_hub/nvfp4'], ['lm_head', 'model.embed_tokens', 'model.layers.1.mlp.gate'])
  t.deepEqual(byCase['qwen3_moe_fused/nvfp4'], ['lm_head', 'model.embed_tokens', 'model.layers.0.mlp.gate', 'model.layers.1.mlp.gate'])
})

/** Routers transformers 5 names otherwise than the hub (ModelOpt lists those names): Granite's `router.layer` is
 * `router`, PhiMoE's `gate` is `router`, HY-V3's `router.gate` is `gate`. */
const IN_MEMORY_ROUTERS = [
  [/\.block_sparse_moe\.router\.layer$/, '.block_sparse_moe.router'],
  [/^(.*)\.block_sparse_moe\.gate$/, '$1.block_sparse_moe.router', 'phimoe'],
  [/\.mlp\.router\.gate$/, '.mlp.gate', 'hy_v3'],
]

/** Modules whose quantizers ModelOpt 0.47 enables (so it does not list them) but whose weights its export writes
 * unquantized: the convolutions of Qwen3-Omni's audio encoder, which moe-quant keeps whole. */
const ENABLED_NOT_EXPORTED = /^model\.audio_tower\.conv2d\d+$/

/** The modules `excludeModules` is given for a golden: its tensors', a tied `lm_head` (which has none), and
 * routers under their transformers 5 names, less those the family's entry says ModelOpt never lists. */
function exportedModules(g) {
  const lists = moduleLists(tensorNames(g.dir))
  lists.unquantized = lists.unquantized.filter((m) => !ENABLED_NOT_EXPORTED.test(m))
  const config = JSON.parse(readFileSync(join(g.fixture, 'config.json'), 'utf8'))
  if (config.tie_word_embeddings === true) lists.unquantized.push('lm_head')
  for (const [pattern, replacement, modelType] of IN_MEMORY_ROUTERS) {
    if (modelType && config.model_type !== modelType) continue
    lists.unquantized = lists.unquantized.map((m) => m.replace(pattern, replacement))
  }
  // Modules ModelOpt puts no quantizer on, as the family's registry entry says (Gemma 4's token embedding).
  const unlisted = lookupArchitecture(config.model_type)?.exportUnlisted ?? []
  lists.unquantized = lists.unquantized.filter((m) => !unlisted.some((suffix) => m.endsWith(suffix)))
  return lists
}

/** Goldens whose exclude_modules name the vision tower as transformers holds it in memory (`model.vision_tower*`)
 * while their tensors keep the hub's names (DeepSeek-OCR-2's `model.sam_model`, `model.qwen2_model`): compared for the
 * language model only. */
const VISION_NAMED_IN_MEMORY = new Set(['families_deepseek_ocr2_hub'])
const LANGUAGE_MODEL = /^(lm_head|model\.(language_model\.)?(layers|embed_tokens|norm)\b)/
const comparedPart = (g, modules) => (VISION_NAMED_IN_MEMORY.has(g.name.split('/')[0]) ? modules.filter((m) => LANGUAGE_MODEL.test(m)) : modules)

for (const g of golden) {
  test(`exclude_modules from the exported tensors: ${g.name}`, (t) => {
    const { quantized, unquantized } = exportedModules(g)
    t.true(quantized.length > 0)
    t.deepEqual(comparedPart(g, excludeModules(unquantized, quantized)), comparedPart(g, cleaned(goldenExclude(g.dir))))
  })

  test(`hf_quant_config.json byte for byte: ${g.name}`, (t) => {
    const expected = readFileSync(join(g.dir, 'hf_quant_config.json'), 'utf8')
    t.is(dumpPyJson(hfQuantConfig(g.format, goldenExclude(g.dir), MODELOPT_VERSION)), expected)
  })

  test(`config.json byte for byte: ${g.name}`, (t) => {
    const expected = readFileSync(join(g.dir, 'config.json'), 'utf8')
    const input = readFileSync(join(g.fixture, 'config.json'), 'utf8')
    const { quantized, unquantized } = exportedModules(g)
    const exclude = excludeModules(unquantized, quantized)
    if (hasSentinel(goldenExclude(g.dir))) {
      const ours = JSON.parse(outputConfigJson(input, quantizationConfig(g.format, exclude, MODELOPT_VERSION)))
      const theirs = JSON.parse(expected)
      theirs.quantization_config.ignore = cleaned(theirs.quantization_config.ignore)
      t.deepEqual(ours, theirs)
      return
    }
    // ModelOpt's FP8 export of Qwen3-Omni's thinker, whose audio encoder it quantizes, records float8_e4m3fn as the
    // model's dtype; moe-quant keeps that encoder and the dtype.
    if (VISION_NAMED_IN_MEMORY.has(g.name.split('/')[0])) {
      const ignore = (config) => ({ ...config, ignore: comparedPart(g, config.ignore) })
      t.deepEqual(ignore(JSON.parse(expected).quantization_config), ignore(quantizationConfig(g.format, exclude)))
      return
    }
    if (g.name === 'families_qwen3_omni_moe_thinker_fused/fp8') {
      const ours = JSON.parse(outputConfigJson(input, quantizationConfig(g.format, exclude, MODELOPT_VERSION)))
      t.deepEqual({ ...ours, dtype: 'float8_e4m3fn' }, JSON.parse(expected))
      return
    }
    t.is(outputConfigJson(input, quantizationConfig(g.format, exclude, MODELOPT_VERSION)), expected)
    t.deepEqual(JSON.parse(expected).quantization_config, quantizationConfig(g.format, exclude))
  })
}

// The KV cache goldens (`<format>_kv_<fp8|fp8_cast>`, tools/make_golden.py --kv-cache): kv_cache_quant_algo "FP8" and
// config.json's kv_cache_scheme placed as ModelOpt places them, for the calibrated and the constant-scale cache alike.
const kvGolden = readdirSync(GOLDEN, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .flatMap((d) => readdirSync(join(GOLDEN, d.name)).filter((sub) => /_kv_/.test(sub)).map((sub) => join(GOLDEN, d.name, sub)))
test('the KV cache goldens are all there', (t) => t.is(kvGolden.length, 6))
for (const dir of kvGolden) {
  const amax = JSON.parse(readFileSync(join(dir, 'amax.json'), 'utf8'))
  const name = dir.slice(GOLDEN.length + 1)
  test(`hf_quant_config.json and config.json with the KV cache byte for byte: ${name}`, (t) => {
    const kvCache = amax.kv_cache_qformat
    t.true(['fp8', 'fp8_cast'].includes(kvCache))
    const exclude = goldenExclude(dir)
    t.is(dumpPyJson(hfQuantConfig(amax.format, exclude, MODELOPT_VERSION, undefined, kvCache)), readFileSync(join(dir, 'hf_quant_config.json'), 'utf8'))
    const input = readFileSync(join(ROOT, amax.fixture, 'config.json'), 'utf8')
    t.is(outputConfigJson(input, quantizationConfig(amax.format, exclude, MODELOPT_VERSION, kvCache)), readFileSync(join(dir, 'config.json'), 'utf8'))
  })
}

test('moduleLists: weight_scale marks quantized modules; norms and enabled convolutions are never listed', (t) => {
  const lists = moduleLists([
    'lm_head.weight',
    'model.norm.weight',
    'model.layers.0.input_layernorm.weight',
    'model.layers.0.self_attn.q_norm.weight',
    'model.layers.0.self_attn.q_proj.weight',
    'model.layers.0.self_attn.q_proj.weight_scale',
    'model.layers.0.self_attn.q_proj.input_scale',
    'model.layers.0.self_attn.q_proj.bias',
    'model.layers.0.mlp.gate.weight',
    'model.layers.0.mlp.gate.e_score_correction_bias',
  ])
  t.deepEqual(lists, { quantized: ['model.layers.0.self_attn.q_proj'], unquantized: ['lm_head', 'model.layers.0.mlp.gate'] })
  // Convolutions: listed where ModelOpt's default patterns disable their quantizers (mixer., linear_attn.), not
  // elsewhere (Granite-4.0-H's mamba.conv1d, LFM2's conv.conv).
  const convs = moduleLists(['a.layers.0.mixer.conv1d.weight', 'a.layers.1.linear_attn.conv1d.weight', 'a.layers.2.mamba.conv1d.weight', 'a.layers.3.conv.conv.weight'])
  t.deepEqual(convs.unquantized, ['a.layers.0.mixer.conv1d', 'a.layers.1.linear_attn.conv1d'])
})

// Expected values below were computed by ModelOpt 0.47's own _prefix_wildcard_summarize_exclude_modules.
test('excludeModules: a vision tower collapses into one prefix wildcard', (t) => {
  const vision = []
  for (let b = 0; b < 4; b++) for (const m of ['attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2']) vision.push(`model.visual.blocks.${b}.${m}`)
  vision.push('model.visual.merger.mlp.0', 'model.visual.merger.mlp.2', 'model.visual.patch_embed.proj')
  const quantized = []
  for (let l = 0; l < 2; l++) for (const m of ['self_attn.q_proj', 'self_attn.k_proj', 'mlp.experts.0.gate_proj']) quantized.push(`model.language_model.layers.${l}.${m}`)
  const unquantized = ['lm_head', 'model.language_model.embed_tokens', 'model.language_model.layers.0.mlp.gate', 'model.language_model.layers.1.mlp.gate', ...vision]
  t.deepEqual(excludeModules(unquantized, quantized), [
    'lm_head',
    'model.language_model.embed_tokens',
    'model.language_model.layers.0.mlp.gate',
    'model.language_model.layers.1.mlp.gate',
    'model.visual*',
  ])
})

test('excludeModules: the pair {prefix, prefix.*} is written prefix.* when prefix* would catch a quantized module', (t) => {
  t.deepEqual(excludeModules(['model.visual.blocks.0.attn.qkv', 'model.visual.merger.mlp.0'], ['model.visual_proj', 'model.layers.0.self_attn.q_proj']), ['model.visual.*'])
})

test('excludeModules: wildcards only at dots; layer 1 is not layer 12', (t) => {
  const quantized = Array.from({ length: 12 }, (_, l) => `model.layers.${l}.self_attn.q_proj`)
  const unquantized = ['model.layers.1.mlp.gate', 'model.layers.12.self_attn.q_proj', 'model.layers.12.eh_proj', 'model.layers.12.mlp.gate']
  t.deepEqual(excludeModules(unquantized, quantized), ['model.layers.1.mlp*', 'model.layers.12*'])
})

test('excludeModules: exact names when every prefix is taken; quantized names are never listed; order-free', (t) => {
  const quantized = ['model.layers.0.mlp.shared_expert.gate_proj', 'model.layers.0.mlp.experts.0.up_proj']
  t.deepEqual(excludeModules(['model.layers.0.mlp.shared_expert_gate', 'model.layers.0.mlp.gate'], quantized), [
    'model.layers.0.mlp.gate',
    'model.layers.0.mlp.shared_expert_gate',
  ])
  t.deepEqual(excludeModules(['lm_head', 'model.layers.0.self_attn.q_proj'], ['model.layers.0.self_attn.q_proj']), ['lm_head'])
  t.deepEqual(excludeModules(['model.embed_tokens', 'lm_head', 'lm_head'], []), ['lm_head', 'model*'])
  t.deepEqual(excludeModules([], ['a.b']), [])
})

test('hfQuantConfig: an empty exclude list and an optional tool record', (t) => {
  t.is(
    dumpPyJson(hfQuantConfig('fp8', [], '0.47.0', { name: 'moe-quant', version: '0.1.0' })),
    '{\n    "producer": {\n        "name": "modelopt",\n        "version": "0.47.0"\n    },\n    "quantization": {\n' +
      '        "quant_algo": "FP8",\n        "kv_cache_quant_algo": null,\n        "exclude_modules": []\n    },\n' +
      '    "quantizer": {\n        "name": "moe-quant",\n        "version": "0.1.0"\n    }\n}',
  )
  t.throws(() => hfQuantConfig('int8', []), { instanceOf: TypeError })
})

test('Python float spelling', (t) => {
  const cases = [
    [1e-5, '1e-05'], [1e-6, '1e-06'], [1e-4, '0.0001'], [10000, '10000.0'], [1e16, '1e+16'], [1e22, '1e+22'],
    [1234567890123456, '1234567890123456.0'], [9999999999999998, '9999999999999998.0'], [0.1, '0.1'],
    [1 / 3, '0.3333333333333333'], [-0, '-0.0'], [0, '0.0'], [1.5e-7, '1.5e-07'], [123456789.125, '123456789.125'],
    [5e-324, '5e-324'], [1.7976931348623157e308, '1.7976931348623157e+308'], [Infinity, 'Infinity'],
    [-Infinity, '-Infinity'], [NaN, 'NaN'], [0.00012345, '0.00012345'], [3e15, '3000000000000000.0'],
  ]
  for (const [value, python] of cases) t.is(pyFloatRepr(value), python, String(value))
})

test('Python JSON text: floats and ints kept apart, ASCII escapes, empty containers, repeated keys', (t) => {
  t.is(dumpPyJson(parsePyJson('{"x": 10000.0, "y": 10000, "z": 1e-5, "w": -0, "big": 123456789012345678901234567890}')),
    '{\n    "x": 10000.0,\n    "y": 10000,\n    "z": 1e-05,\n    "w": 0,\n    "big": 123456789012345678901234567890\n}')
  t.is(
    dumpPyJson({ a: 'é☃😀\u007f\u0001"\\\n/', b: [], c: {}, d: [1, { x: null }] }),
    '{\n    "a": "\\u00e9\\u2603\\ud83d\\ude00\\u007f\\u0001\\"\\\\\\n/",\n    "b": [],\n    "c": {},\n    "d": [\n        1,\n        {\n            "x": null\n        }\n    ]\n}',
  )
  t.is(dumpPyJson(parsePyJson('{"b":1,"a":2,"b":3,"10":1,"2":2}')), '{\n    "b": 3,\n    "a": 2,\n    "10": 1,\n    "2": 2\n}')
  t.throws(() => parsePyJson('{"a": 1,}', 'x.json'), { code: 'E_CONFIG_INVALID' })
  t.throws(() => parsePyJson('[1] 2'), { code: 'E_CONFIG_INVALID' })
})

test('outputConfigJson: keys sorted as transformers saves them, ModelOpt sanitizing, quantization_config last', (t) => {
  const input = `{
  "num_hidden_layers": 2,
  "rope_theta": 500000.0,
  "rope_scaling": {"type": "llama3", "factor": 8.0},
  "layer_types": ["full_attention", "sliding_attention", "full_attention"],
  "num_nextn_predict_layers": 1,
  "id2label": {"2": "b", "10": "a"},
  "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]},
  "dtype": "bfloat16"
}
`
  const out = JSON.parse(outputConfigJson(input, quantizationConfig('nvfp4', ['lm_head'])))
  t.deepEqual(Object.keys(out), ['dtype', 'id2label', 'layer_types', 'num_hidden_layers', 'num_nextn_predict_layers', 'rope_scaling', 'rope_theta', 'quantization_config'])
  t.deepEqual(out.layer_types, ['full_attention', 'sliding_attention'])
  t.deepEqual(out.rope_scaling, { factor: 8, type: 'llama3', rope_theta: 500000 })
  t.is(out.quantization_config.quant_algo, 'NVFP4')
  t.regex(outputConfigJson(input, quantizationConfig('fp8', [])), /"id2label": \{\n {8}"10": "a",\n {8}"2": "b"\n {4}\}/)
  t.regex(outputConfigJson(input, quantizationConfig('fp8', [])), /"rope_theta": 500000\.0\n {4}\},/)
  // Without the next-token-prediction explanation, layer_types is left alone.
  const plain = JSON.parse(outputConfigJson(JSON.stringify({ num_hidden_layers: 1, layer_types: ['a', 'b'] }), quantizationConfig('fp8', [])))
  t.deepEqual(plain.layer_types, ['a', 'b'])
  t.throws(() => outputConfigJson('[1]', {}), { code: 'E_CONFIG_INVALID' })
})

test('config.json nested deeper than Python reads is refused with a code, not a stack overflow', (t) => {
  const deep = (n) => `{"a":${'['.repeat(n)}${']'.repeat(n)}}`
  t.true(parsePyJson(deep(900), 'config.json') instanceof Map)
  const error = t.throws(() => parsePyJson(deep(100000), 'config.json'), { code: 'E_CONFIG_INVALID' })
  t.regex(error.message, /^config\.json: not valid JSON: arrays and objects nested more than 1000 deep at offset/)
})

test('every format meets the keys serving engines read from a ModelOpt checkpoint', (t) => {
  // vLLM's and SGLang's ModelOpt loaders read quant_algo (one of the names they accept), group_size for the
  // NVFP4 formats, kv_cache_quant_algo, and exclude_modules, which must be present even when empty; config.json
  // carries the same under quantization_config with quant_method "modelopt".
  // ModelOpt 0.47 writes the 128×128 block format's name in lower case.
  const accepted = { fp8: 'FP8', nvfp4: 'NVFP4', w4a16_nvfp4: 'W4A16_NVFP4', fp8_pc_pt: 'FP8_PER_CHANNEL_PER_TOKEN', fp8_pb_wo: 'fp8_pb_wo', mxfp8: 'MXFP8', mxfp4: 'mxfp4' }
  for (const [format, algo] of Object.entries(accepted)) {
    const { quantization } = hfQuantConfig(format, [])
    t.is(quantization.quant_algo, algo, format)
    t.true(Object.hasOwn(quantization, 'kv_cache_quant_algo') && quantization.kv_cache_quant_algo === null, format)
    t.deepEqual(quantization.exclude_modules, [], format)
    t.is(quantization.group_size, format.includes('nvfp4') ? 16 : format === 'mxfp8' ? 32 : undefined, format)
    const config = quantizationConfig(format, [])
    t.like(config, { quant_method: 'modelopt', quant_algo: algo, ignore: [] })
    t.false(Object.hasOwn(config, 'kv_cache_scheme'), format)
    // An FP8 KV cache, calibrated or not: kv_cache_quant_algo "FP8", and kv_cache_scheme right after quant_algo.
    for (const kvCache of ['fp8', 'fp8_cast']) {
      t.is(hfQuantConfig(format, [], MODELOPT_VERSION, undefined, kvCache).quantization.kv_cache_quant_algo, 'FP8')
      const keys = Object.keys(quantizationConfig(format, [], MODELOPT_VERSION, kvCache))
      t.deepEqual(keys.slice(keys.indexOf('quant_algo')), ['quant_algo', 'kv_cache_scheme', 'producer', 'quant_method'], `${format} ${kvCache}`)
    }
  }
})
