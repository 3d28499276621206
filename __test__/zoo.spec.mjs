// inspectModel() over the MoE zoo: a tiny checkpoint of every Mixture-of-Experts model type of transformers
// 5.25 (fixtures/zoo/, written by tools/make_zoo.py with ground truth read from the models' modules), in the
// hub layout and, where it differs, the transformers 5 fused layout. Each case is materialized from its header
// listing (__test__/helpers/zoo.mjs).
//
// EXPECTED_OK lists the cases detection gets entirely right (MoE layers, E, top-k, H, I, layout kind, shared
// experts, router and routed-expert tensor names); each is also quantized weight-only. Every other case is in
// REFUSED, with the code and the words that say why. When detection learns a family, move its cases into
// EXPECTED_OK (tools/zoo-report.mjs shows every case).
import test from 'ava'

import { ERROR_CODES, MoeQuantError, expertTensorNames, inspectModel, quantizeModel } from '../dist/index.js'
import { readTensors } from './helpers/checkpoint.mjs'
import { compareWithTruth, loadZooEntry, materializeZoo, removeZooCheckpoint, zooCases } from './helpers/zoo.mjs'

const EXPECTED_OK = new Set([
  'afmoe/fused', 'afmoe/hub',
  'aria/fused', 'aria/hub',
  'aria_text/fused', 'aria_text/hub',
  'axk1/fused', 'axk1/hub',
  'axk2/fused', 'axk2/hub',
  'bailing_hybrid/fused', 'bailing_hybrid/hub',
  'beam/fused', 'beam/hub',
  'cohere2_moe/fused', 'cohere2_moe/hub',
  'deepseek_ocr2/fused', 'deepseek_ocr2/hub',
  'deepseek_v2/fused', 'deepseek_v2/hub',
  'deepseek_v3/fused', 'deepseek_v3/hub',
  'deepseek_v32/fused', 'deepseek_v32/hub',
  'deepseek_v4/fused', 'deepseek_v4/hub',
  'diffusion_gemma/hub',
  'dots1/fused', 'dots1/hub',
  'dots3_note/fused', 'dots3_note/hub',
  'dots3_note_text/fused', 'dots3_note_text/hub',
  'ernie4_5_moe/fused', 'ernie4_5_moe/hub',
  'exaone_moe/fused', 'exaone_moe/hub',
  'flex_olmo/fused', 'flex_olmo/hub',
  'flint/fused', 'flint/hub',
  'gemma4/hub',
  'gemma4_text/hub',
  'glm4_moe/fused', 'glm4_moe/hub',
  'glm4_moe_lite/fused', 'glm4_moe_lite/hub',
  'glm4v_moe/fused', 'glm4v_moe/hub',
  'glm5_next/fused', 'glm5_next/hub',
  'glm_moe_dsa/fused', 'glm_moe_dsa/hub',
  'gpt_oss/hub',
  'granitemoe/fused', 'granitemoe/hub',
  'granitemoe_swa/hub',
  'granitemoehybrid/fused', 'granitemoehybrid/hub',
  'granitemoeshared/fused', 'granitemoeshared/hub',
  'hunyuan_v1_moe/fused', 'hunyuan_v1_moe/hub',
  'hy_v3/fused', 'hy_v3/hub',
  'hy_v4/fused', 'hy_v4/hub',
  'hy_v4_vl/fused', 'hy_v4_vl/hub',
  'inkling2/fused', 'inkling2/hub',
  'inkling2_loop/fused', 'inkling2_loop/hub',
  'inkling2_loop_text/fused', 'inkling2_loop_text/hub',
  'inkling2_text/fused', 'inkling2_text/hub',
  'inkling_mm_model/fused', 'inkling_mm_model/hub',
  'inkling_text/hub',
  'jamba/fused', 'jamba/hub',
  'kimi_k25/fused', 'kimi_k25/hub',
  'kimi_linear/fused', 'kimi_linear/hub',
  'kolibri1/fused', 'kolibri1/hub',
  'kolibri1_1/fused', 'kolibri1_1/hub',
  'laguna/fused', 'laguna/hub',
  'lara_mini/fused', 'lara_mini/hub',
  'lfm2_moe/fused', 'lfm2_moe/hub',
  'llama4/hub',
  'llama4_text/hub',
  'longcat_flash/fused', 'longcat_flash/hub',
  'mellum/fused', 'mellum/hub',
  'mimo_v2_flash/fused', 'mimo_v2_flash/hub',
  'minicpm5_moe/fused', 'minicpm5_moe/hub',
  'minimax/fused', 'minimax/hub',
  'minimax_m2/fused', 'minimax_m2/hub',
  'minimax_m3_vl/fused', 'minimax_m3_vl/hub',
  'minimax_m3_vl_text/hub',
  'mistral4/hub',
  'mistral_large4/fused', 'mistral_large4/hub',
  'mixtral/fused', 'mixtral/hub',
  'muse_spark/hub',
  'nemo_speechlm/fused', 'nemo_speechlm/hub',
  'nemotron_h/fused', 'nemotron_h/hub',
  'nemotron_h_omni/fused', 'nemotron_h_omni/hub',
  'olmoe/fused', 'olmoe/hub',
  'openai_privacy_filter/hub',
  'param2moe/fused', 'param2moe/hub',
  'phimoe/fused', 'phimoe/hub',
  'qwen2_moe/fused', 'qwen2_moe/hub',
  'qwen3_5_moe/fused', 'qwen3_5_moe/hub',
  'qwen3_5_moe_text/fused', 'qwen3_5_moe_text/hub',
  'qwen3_moe/fused', 'qwen3_moe/hub',
  'qwen3_next/fused', 'qwen3_next/hub',
  'qwen3_omni_moe/fused', 'qwen3_omni_moe/hub',
  'qwen3_omni_moe_thinker/fused', 'qwen3_omni_moe_thinker/hub',
  'qwen3_vl_moe/hub',
  'qwen4_exp/fused', 'qwen4_exp/hub',
  'qwen4_exp_text/fused', 'qwen4_exp_text/hub',
  'sarvam_mla/fused', 'sarvam_mla/hub',
  'sarvam_moe/fused', 'sarvam_moe/hub',
  'solar_open/fused', 'solar_open/hub',
  'step3p7/fused',
  'unlimited_ocr/fused', 'unlimited_ocr/hub',
])

/** The cases refused, with the code and the start of the message that says why (the model directory cut out). */
const REFUSED = {
  // ERGO: ungated, with a per-expert output norm inside the experts module.
  'ergo/fused': ['E_MODEL_UNSUPPORTED', 'model.layers.1.mlp.experts: ungated experts with more than up_proj and down_proj (mlp.experts.post_expert_norm.weight) are not read'],
  // On the hub its stacks sit in the block beside a router stored [H, E] (`gate_kernel`).
  'ergo/hub': ['E_LAYOUT_UNRECOGNISED', 'layers.1.feed_forward: no router weight [8, 64] found beside the experts'],
  'dbrx/hub': ['E_LAYOUT_UNRECOGNISED', 'no MoE layer found in this dbrx checkpoint: no decoder layer holds expert tensors in a layout moe-quant reads although config.json declares 8 experts'],
  'ernie4_5_vl_moe/fused': ['E_MODEL_UNSUPPORTED', 'config.json: model_type "ernie4_5_vl_moe_text" is not handled: each MoE block holds text and vision experts side by side'],
  'ernie4_5_vl_moe/hub': ['E_MODEL_UNSUPPORTED', 'config.json: model_type "ernie4_5_vl_moe_text" is not handled'],
  'jetmoe/hub': ['E_MODEL_UNSUPPORTED', 'config.json: model_type "jetmoe" is not handled: its attention is a mixture of experts too'],
  'nllb-moe/hub': ['E_MODEL_UNSUPPORTED', 'config.json: an encoder-decoder model (nllb-moe): moe-quant quantizes decoder-only language models'],
  'step3p7/hub': ['E_MODEL_UNSUPPORTED', 'model.layers.3.moe: experts stored as three stacked tensors'],
  'switch_transformers/hub': ['E_MODEL_UNSUPPORTED', 'config.json: an encoder-decoder model (switch_transformers)'],
  'zaya/hub': ['E_MODEL_UNSUPPORTED', 'config.json: model_type "zaya" is not handled: its router is an MLP'],
}

/** Experts stacked on the hub ([E, H, 2I]) by a family without a registry entry: detected, but the form
 * ModelOpt would export them in is pinned by goldens for GPT-OSS and Llama 4 only, so export is refused. */
const STACKED_WITHOUT_ENTRY = new Set(['openai_privacy_filter/hub'])

const KNOWN_CODES = new Set(ERROR_CODES)

/**
 * Quantizes a materialized zoo checkpoint to W4A16_NVFP4 (block-16 linears only: the zoo's odd-sized tensors of
 * vision towers and mixers are kept, as `indivisible: 'keep'` says) and checks what came out: every routed
 * expert of every MoE layer quantized (3 projections per expert, 2 for ungated experts, or the 2 stacks of a family that keeps its
 * experts stacked on the hub), each layer's weights within NVFP4's
 * precision of the original (relative MSE, Σ(dequantized − original)² / Σ original², below 2e-2 for random
 * normal weights), and no calibration.
 */
async function quantizedWithinPrecision(t, dir, report) {
  const output = `${dir}-w4a16`
  try {
    const result = await quantizeModel({ model: dir, output, format: 'w4a16_nvfp4', indivisible: 'keep' })
    t.is(result.tokens, 0)
    for (const layer of result.layers) t.true(layer.relativeMse > 0 && layer.relativeMse < 2e-2, `layer ${layer.layer}: ${layer.relativeMse}`)
    const tensors = readTensors(`${output}/model.safetensors`)
    const names = Object.keys(tensors)
    t.false(names.some((n) => n.endsWith('.input_scale')))
    for (const layer of report.moeLayers) {
      const inLayer = new RegExp(`(^|\\.)(layers|blocks)\\.${layer.layer}\\.`)
      const ofLayer = names.filter((n) => inLayer.test(n) && !/shared/.test(n))
      // Per expert (hub names), or stacked as the hub keeps them ([E, …] with `<param>_weight_scale_2`).
      const perExpert = ofLayer.filter((n) => n.endsWith('.weight_scale_2') && /experts\.\d+\./.test(n)).length
      const stacked = ofLayer.filter((n) => /experts\.(?!\d+\.)[^.]+[._]weight_scale_2$/.test(n)).length
      // Ungated experts (up and down, no gate: Nemotron-H) have 2 projections per expert.
      const projections = layer.tensors.gate || layer.tensors.gateUp ? 3 : 2
      t.true((perExpert === projections * layer.experts && stacked === 0) || (perExpert === 0 && stacked === 2), `layer ${layer.layer}: ${perExpert} per-expert and ${stacked} stacked projections quantized`)
    }
  } finally {
    removeZooCheckpoint(output)
  }
}
const cases = zooCases()

test('every EXPECTED_OK case is in the zoo', (t) => {
  const present = new Set(cases.map(({ modelType, layout }) => `${modelType}/${layout}`))
  t.deepEqual([...EXPECTED_OK].filter((key) => !present.has(key)), [])
})

/**
 * Families whose hub checkpoints spell the routing bias in a way structure alone cannot tell from a plain bias
 * (Inkling's `gate.bias`, Kolibri's `moe.router.expert_bias` outside the block, DeepSeek-V4's hash-routed
 * layers): the router kind guessed for their hub layout differs from the fused one. A registry entry fixes that.
 */
const ROUTER_GUESS_DIFFERS = new Set(['deepseek_v4', 'inkling2', 'inkling2_loop', 'inkling2_loop_text', 'inkling2_text', 'inkling_mm_model', 'kolibri1', 'kolibri1_1'])

test('the router guessed for one model is the same in both layouts', async (t) => {
  const byType = new Map()
  for (const { modelType, layout } of cases) {
    if (!EXPECTED_OK.has(`${modelType}/${layout}`)) continue
    const dir = materializeZoo(modelType, layout)
    try {
      const report = await inspectModel(dir)
      const kinds = report.moeLayers.map((l) => l.router).join(',')
      byType.set(modelType, [...(byType.get(modelType) ?? []), kinds])
    } finally {
      removeZooCheckpoint(dir)
    }
  }
  const differing = [...byType].filter(([, kinds]) => new Set(kinds).size > 1).map(([type]) => type)
  t.deepEqual(differing.sort(), [...ROUTER_GUESS_DIFFERS].sort())
})

for (const { modelType, layout } of cases) {
  const key = `${modelType}/${layout}`
  if (EXPECTED_OK.has(key)) {
    test(`zoo ${key}: detected as the model's modules say, and quantized weight-only`, async (t) => {
      const dir = materializeZoo(modelType, layout)
      try {
        const report = await inspectModel(dir)
        t.deepEqual(compareWithTruth(report, loadZooEntry(modelType), layout, expertTensorNames), [])
        const support = report.formats.find((f) => f.format === 'w4a16_nvfp4')
        if (STACKED_WITHOUT_ENTRY.has(key)) {
          t.regex(support.reason, /^E_MODEL_UNSUPPORTED: .*experts stored stacked on the hub .* by a family without a registry entry/)
          return
        }
        t.is(support.support, 'weight_only', support.reason)
        await quantizedWithinPrecision(t, dir, report)
      } finally {
        removeZooCheckpoint(dir)
      }
    })
  } else {
    test(`zoo ${key}: refused with a code that says why`, async (t) => {
      const dir = materializeZoo(modelType, layout)
      try {
        await inspectModel(dir)
        t.fail('inspected, but neither in EXPECTED_OK nor in REFUSED')
      } catch (error) {
        t.true(error instanceof MoeQuantError, `expected a MoeQuantError, got ${error?.name}: ${error?.message}`)
        t.true(KNOWN_CODES.has(error.code), `unknown error code ${error.code}`)
        const [code, start] = REFUSED[key] ?? []
        t.is(error.code, code, error.message)
        t.true(error.message.replace(`${dir}/`, '').startsWith(start), error.message)
      } finally {
        removeZooCheckpoint(dir)
      }
    })
  }
}
