// Prepares the moe-quant side of the end-to-end race on a machine with Node: writes a header-only skeleton
// of the synthetic checkpoint (real headers, sparse zero data), builds the model descriptor and the FP8 and
// NVFP4 export plans from it exactly as quantizeModel() does, and writes them with the tensor list that
// make_checkpoint.py fills with random weights on the GPU machine.
//
//   npm run build:ts && node benches/e2e/prepare.mjs --layers 8 --out .device/e2e/plans-8
//   node benches/e2e/prepare.mjs --layers 4 --config benches/e2e/mixtral-8x7b.config.json --out .device/e2e/mixtral-4
//   node benches/e2e/prepare.mjs --layers 5 --config benches/e2e/deepseek-v3.config.json --out .device/e2e/dsv3-5
//
// The config decides the family: Qwen3-MoE or Mixtral (the race's two shapes), or DeepSeek-V3 (MLA attention, the
// first `first_k_dense_replace` layers dense, a shared expert; the several-GPU benchmark's shape, benches/e2e/scaling.sh).
import { mkdirSync, openSync, closeSync, ftruncateSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { parseConfig } from '../../dist/model/config.js'
import { buildDescriptor } from '../../dist/model/spec/index.js'
import { planExport } from '../../dist/export/plan.js'
import { reportFromListing } from '../../dist/model/inspection.js'
import { readListing } from '../../dist/model/listing.js'

const here = fileURLToPath(new URL('.', import.meta.url))
const { values } = parseArgs({ options: { layers: { type: 'string', default: '8' }, out: { type: 'string' }, config: { type: 'string', default: join(here, 'qwen3-30b-a3b.config.json') } } })
const layers = Number(values.layers)
const out = values.out
if (!out || !Number.isInteger(layers) || layers < 1) throw new Error('usage: prepare.mjs --layers N --out DIR [--config FILE]')

const config = JSON.parse(readFileSync(values.config, 'utf8'))
config.num_hidden_layers = layers
const H = config.hidden_size
const heads = config.num_attention_heads
const kv = config.num_key_value_heads
const D = config.head_dim ?? H / heads
const V = config.vocab_size

/**
 * The hub (per-expert) tensor list of the checkpoint, in file order: Qwen3-MoE (`mlp.experts.{e}.gate_proj`,
 * q/k norms) or Mixtral (`block_sparse_moe.experts.{e}.w1`/`w3`/`w2`).
 */
const FAMILIES = {
  qwen3_moe: { I: config.moe_intermediate_size, E: config.num_experts, moe: 'mlp', router: 'gate', projections: ['gate_proj', 'up_proj', 'down_proj'], qkNorm: true },
  mixtral: { I: config.intermediate_size, E: config.num_local_experts, moe: 'block_sparse_moe', router: 'gate', projections: ['w1', 'w3', 'w2'], qkNorm: false },
}
const tensors = [['model.embed_tokens.weight', [V, H]]]
if (config.model_type === 'deepseek_v3') {
  deepseekV3Layers()
} else {
  const family = FAMILIES[config.model_type]
  if (!family) throw new Error(`prepare.mjs: no tensor list for model_type ${config.model_type} (${[...Object.keys(FAMILIES), 'deepseek_v3'].join(', ')})`)
  const { I, E } = family
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.`
    tensors.push([`${p}input_layernorm.weight`, [H]], [`${p}post_attention_layernorm.weight`, [H]])
    tensors.push([`${p}self_attn.q_proj.weight`, [heads * D, H]], [`${p}self_attn.k_proj.weight`, [kv * D, H]])
    tensors.push([`${p}self_attn.v_proj.weight`, [kv * D, H]], [`${p}self_attn.o_proj.weight`, [H, heads * D]])
    if (family.qkNorm) tensors.push([`${p}self_attn.q_norm.weight`, [D]], [`${p}self_attn.k_norm.weight`, [D]])
    tensors.push([`${p}${family.moe}.${family.router}.weight`, [E, H]])
    const [gate, up, down] = family.projections
    for (let e = 0; e < E; e++) {
      const x = `${p}${family.moe}.experts.${e}.`
      tensors.push([`${x}${gate}.weight`, [I, H]], [`${x}${up}.weight`, [I, H]], [`${x}${down}.weight`, [H, I]])
    }
  }
}

/** DeepSeek-V3's hub tensors: MLA attention, dense MLPs in the first layers, then routed experts with a shared one. */
function deepseekV3Layers() {
  const { q_lora_rank: qRank, kv_lora_rank: kvRank, qk_nope_head_dim: nope, qk_rope_head_dim: rope, v_head_dim: vDim } = config
  const I = config.moe_intermediate_size
  const mlp = (prefix, inner) => {
    tensors.push([`${prefix}gate_proj.weight`, [inner, H]], [`${prefix}up_proj.weight`, [inner, H]], [`${prefix}down_proj.weight`, [H, inner]])
  }
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.`
    tensors.push([`${p}input_layernorm.weight`, [H]], [`${p}post_attention_layernorm.weight`, [H]])
    tensors.push([`${p}self_attn.q_a_proj.weight`, [qRank, H]], [`${p}self_attn.q_a_layernorm.weight`, [qRank]])
    tensors.push([`${p}self_attn.q_b_proj.weight`, [heads * (nope + rope), qRank]])
    tensors.push([`${p}self_attn.kv_a_proj_with_mqa.weight`, [kvRank + rope, H]], [`${p}self_attn.kv_a_layernorm.weight`, [kvRank]])
    tensors.push([`${p}self_attn.kv_b_proj.weight`, [heads * (nope + vDim), kvRank]], [`${p}self_attn.o_proj.weight`, [H, heads * vDim]])
    if (l < config.first_k_dense_replace) {
      mlp(`${p}mlp.`, config.intermediate_size)
      continue
    }
    tensors.push([`${p}mlp.gate.weight`, [config.n_routed_experts, H]], [`${p}mlp.gate.e_score_correction_bias`, [config.n_routed_experts]])
    for (let e = 0; e < config.n_routed_experts; e++) mlp(`${p}mlp.experts.${e}.`, I)
    mlp(`${p}mlp.shared_experts.`, I * config.n_shared_experts)
  }
}
tensors.push(['model.norm.weight', [H]], ['lm_head.weight', [V, H]])

// Skeleton: a valid single-file safetensors whose data is a hole (sparse; no disk used).
const skeleton = join(out, 'skeleton')
mkdirSync(skeleton, { recursive: true })
writeFileSync(join(skeleton, 'config.json'), JSON.stringify(config, null, 2))
const header = {}
let offset = 0
for (const [name, shape] of tensors) {
  const bytes = shape.reduce((a, b) => a * b, 1) * 2
  header[name] = { dtype: 'BF16', shape, data_offsets: [offset, offset + bytes] }
  offset += bytes
}
let json = Buffer.from(JSON.stringify(header))
json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)])
const length = Buffer.alloc(8)
length.writeBigUInt64LE(BigInt(json.length))
const fd = openSync(join(skeleton, 'model.safetensors'), 'w')
writeSync(fd, Buffer.concat([length, json]))
ftruncateSync(fd, 8 + json.length + offset)
closeSync(fd)

const listing = await readListing(skeleton)
const report = reportFromListing(listing)
const descriptor = buildDescriptor(report, parseConfig(listing.config, 'config.json'), listing)
writeFileSync(join(out, 'descriptor.json'), JSON.stringify(descriptor))
for (const format of ['fp8', 'nvfp4']) {
  const { plan } = planExport(report, descriptor, listing, {
    format, scope: 'all', exclude: [], indivisible: 'error', maxShardBytes: 5e9, overwrite: true, tool: { name: 'moe-quant', version: 'bench' },
  })
  plan.copy = []
  writeFileSync(join(out, `plan-${format}.json`), JSON.stringify(plan))
}
writeFileSync(join(out, 'tensors.json'), JSON.stringify(tensors))
writeFileSync(join(out, 'config.json'), JSON.stringify(config, null, 2))
rmSync(skeleton, { recursive: true })
console.log(`${layers} layers, ${tensors.length} tensors, ${(offset / 1e9).toFixed(2)} GB of bf16 weights → ${out}`)
