// The native forward against transformers (5.17 for fixtures/, 5.25 for fixtures/families/): logits within 1e-5
// relative L2 (f32) and every recorded activation maximum within 1e-5 relative, for every fixture family with a
// forward, in every layout. References were written by tools/make_fixtures.py and tools/make_family_fixtures.py
// with forward hooks.
import test from 'ava'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

import { calibrateModel, computeLogits } from '../dist/index.js'
import { FIXTURES, calibratedFamilyFixtures, manifest, readTensors, relativeL2, rows, tempDir } from './helpers/checkpoint.mjs'

const fixtures = [...manifest(), ...calibratedFamilyFixtures()]

function reference(entry) {
  const tensors = readTensors(join(FIXTURES, entry.path, 'reference.safetensors'))
  const [batch, seq] = tensors.input_ids.shape
  return { tensors, ids: rows(tensors.input_ids.values, seq), batch, seq }
}

const close = (t, got, want, tolerance, what) =>
  t.true(Math.abs(got - want) <= tolerance * Math.abs(want), `${what}: ${got} vs transformers ${want}`)

for (const entry of fixtures) {
  test(`logits of ${entry.path} match transformers`, async (t) => {
    const ref = reference(entry)
    const { logits, shape } = await computeLogits(join(FIXTURES, entry.path), ref.ids)
    t.deepEqual(shape, ref.tensors.logits.shape)
    const error = relativeL2(logits, ref.tensors.logits.values)
    t.true(error < 1e-5, `relative L2 ${error}`)
  })

  test(`activation maxima and expert token counts of ${entry.path} match transformers hooks`, async (t) => {
    const ref = reference(entry)
    const result = await calibrateModel({
      model: join(FIXTURES, entry.path),
      calibration: { ids: ref.ids, samples: ref.batch, seqLen: ref.seq },
    })
    t.is(result.tokens, ref.batch * ref.seq)
    // Every nn.Linear input the reference recorded under a module name we also use. The reference names modules as
    // transformers holds them; a checkpoint stored under another prefix (Nemotron-H's `backbone.` on the hub) names
    // them under that one, as the experts' tensors show; and other hub spellings (Kimi-K2.5's
    // language_model.model.blocks.*, Qwen3-Omni's thinker's model.layers.*; Param2 / Sarvam-MoE's Bailing names, whose
    // q, k and v, split on load, are one query_key_value reading their input; Kimi-Linear's, whose dense MLPs are under
    // block_sparse_moe like its experts and whose decay projections sit beside the other projections).
    const [inMemory, onDisk] = [entry.experts_modules_in_memory[0], entry.expert_tensor_names[0]].map((n) => n.slice(0, n.indexOf('layers.')))
    const stored = (module) => (module.startsWith(inMemory) ? onDisk + module.slice(inMemory.length) : module)
    let compared = 0
    let textLinears = 0
    for (const [key, tensor] of Object.entries(ref.tensors)) {
      if (!key.startsWith('amax.') || key.endsWith('_input')) continue
      const name = key.slice('amax.'.length)
      const spellings = [
        stored(name),
        name,
        name.replace(/^model\.language_model\.layers\./, 'language_model.model.blocks.'),
        name.replace(/^model\.language_model\.layers\./, 'model.layers.'),
        name.replace(/\.self_attn\.[qkv]_proj$/, '.attention.query_key_value').replace(/\.self_attn\.o_proj$/, '.attention.dense'),
        name.replace('.self_attn.forget_gate.', '.self_attn.').replace(/\.mlp\./, '.block_sparse_moe.'),
      ]
      if (stored(name).startsWith(onDisk)) textLinears++
      const module = spellings.find((m) => m in result.inputAmax)
      if (module) {
        close(t, result.inputAmax[module], tensor.values[0], 1e-5, module)
        compared++
      }
    }
    // Four linears per layer, or every linear of the decoder layers where they hold fewer (one mixer each).
    t.true(compared >= Math.min(4 * entry.num_layers, textLinears), `compared ${compared} linear inputs`)
    // Experts: one gate/up and one down input maximum per MoE layer, and routed tokens per expert.
    t.deepEqual(result.experts.map((l) => l.layer), entry.moe_layers)
    for (const layer of result.experts) {
      const module = entry.experts_modules_in_memory.find((m) => m.includes(`.layers.${layer.layer}.`))
      close(t, layer.gateUpInputAmax, ref.tensors[`amax.${module}.gate_up_input`].values[0], 1e-5, `${module} gate/up input`)
      close(t, layer.downInputAmax, ref.tensors[`amax.${module}.down_input`].values[0], 1e-5, `${module} down input`)
      t.deepEqual(layer.tokens, Array.from(ref.tensors[`tokens.${module}`].values))
      t.deepEqual(layer.uncalibrated, [])
    }
  })
}

test('hub and fused layouts of one model give identical calibration statistics', async (t) => {
  const ref = reference(fixtures.find((f) => f.path === 'qwen3_moe/hub'))
  const calibrate = (path) => calibrateModel({ model: join(FIXTURES, path), calibration: { ids: ref.ids, samples: 2, seqLen: 12 } })
  const [hub, fused] = await Promise.all([calibrate('qwen3_moe/hub'), calibrate('qwen3_moe/fused')])
  t.deepEqual(hub.inputAmax, fused.inputAmax)
  t.deepEqual(hub.experts, fused.experts)
})

test('experts that saw no token are reported, with a warning and in the coverage heatmap', async (t) => {
  const dir = join(FIXTURES, 'qwen3_moe/hub')
  const report = join(tempDir(), 'coverage.html')
  const result = await calibrateModel({ model: dir, calibration: { ids: [[229, 27]], samples: 1, seqLen: 2 }, coverageReport: report })
  // 2 tokens × top-2 = 4 routings per layer: at least 4 of the 8 experts got nothing.
  for (const layer of result.experts) {
    t.is(layer.tokens.reduce((a, b) => a + b, 0), 4)
    t.true(layer.uncalibrated.length >= 4)
    t.deepEqual(layer.uncalibrated, layer.tokens.flatMap((n, e) => (n === 0 ? [e] : [])))
    // Weight maxima exist for every expert, routed or not.
    t.true(layer.weightAmax.gate.every((v) => v > 0) && layer.weightAmax.down.every((v) => v > 0))
  }
  t.is(result.uncalibratedExperts, result.experts.reduce((n, l) => n + l.uncalibrated.length, 0))
  t.true(result.warnings.some((w) => w.includes('saw no calibration token')))
  t.is(result.coverageReportPath, report)
  const html = readFileSync(report, 'utf8')
  t.true(html.startsWith('<!doctype html>'))
  t.false(/<script|https?:\/\//.test(html), 'self-contained: no scripts, no external assets')
  t.is((html.match(/<td style="background:#d7301f"/g) ?? []).length, result.uncalibratedExperts)
})

test('routing every token through every expert changes statistics but not coverage counts', async (t) => {
  const ref = reference(fixtures.find((f) => f.path === 'qwen3_moe/hub'))
  const run = (allExperts) =>
    calibrateModel({ model: join(FIXTURES, 'qwen3_moe/hub'), calibration: { ids: ref.ids, samples: 2, seqLen: 12, allExperts } })
  const [routed, all] = [await run(false), await run(true)]
  t.deepEqual(all.inputAmax, routed.inputAmax, 'the layer outputs, hence later inputs, are unchanged')
  for (let i = 0; i < all.experts.length; i++) {
    t.deepEqual(all.experts[i].tokens, routed.experts[i].tokens)
    t.true(all.experts[i].downInputAmax >= routed.experts[i].downInputAmax)
  }
})

test('progress reports every layer, and peak memory is reported', async (t) => {
  const events = []
  const result = await calibrateModel({
    model: join(FIXTURES, 'mixtral/hub_sharded'),
    calibration: { ids: [[1, 2, 3, 4]], samples: 1, seqLen: 4 },
    onProgress: (e) => events.push(e),
  })
  t.deepEqual(events.map((e) => e.layer), [1, 2])
  t.true(events.every((e) => e.stage === 'calibrate' && e.layers === 2 && e.tokens === 4))
  t.true(result.peakRssBytes > 0)
})

test('an aborted signal rejects with E_CANCELLED', async (t) => {
  const controller = new AbortController()
  controller.abort()
  const error = await t.throwsAsync(
    calibrateModel({ model: join(FIXTURES, 'qwen3_moe/hub'), calibration: { ids: [[1, 2]], samples: 1, seqLen: 2 }, signal: controller.signal }),
  )
  t.is(error.code, 'E_CANCELLED')
})

test('calibration from text uses the model tokenizer; ids outside the vocabulary are refused', async (t) => {
  const dir = join(FIXTURES, 'qwen3_moe/hub')
  const text = join(tempDir(), 'calib.jsonl')
  const lines = Array.from({ length: 20 }, (_, i) => JSON.stringify({ text: `Sample ${i}: the experts route tokens by their router scores.` }))
  await import('node:fs').then((fs) => fs.writeFileSync(text, lines.join('\n')))
  const result = await calibrateModel({ model: dir, calibration: { data: text, samples: 4, seqLen: 16, batchSize: 3 } })
  t.is(result.samples, 4)
  t.is(result.tokens, 64)
  const bad = await t.throwsAsync(calibrateModel({ model: dir, calibration: { ids: [[1, 999]], samples: 1, seqLen: 2 } }))
  t.is(bad.code, 'E_CALIBRATION_ID_RANGE')
  t.true(bad.message.includes('999') && bad.message.includes('256'))
  const missing = await t.throwsAsync(calibrateModel({ model: dir, calibration: { samples: 1 } }))
  t.is(missing.code, 'E_OPTION_INVALID')
  t.false(existsSync(join(dir, 'coverage.html')))
})

// Dense Llama, Qwen3 and Mistral (fixtures/dense, tools/make_dense_fixtures.py, transformers 5.25) through the
// same blocks: logits, and the input maximum of every linear transformers' hooks saw.
const dense = JSON.parse(readFileSync(join(FIXTURES, 'dense', 'MANIFEST.json'), 'utf8')).fixtures
for (const entry of dense) {
  test(`dense ${entry.model_type}: logits and activation maxima match transformers`, async (t) => {
    const ref = reference(entry)
    const { logits } = await computeLogits(join(FIXTURES, entry.path), ref.ids)
    const error = relativeL2(logits, ref.tensors.logits.values)
    t.true(error < 1e-5, `relative L2 ${error}`)
    const result = await calibrateModel({ model: join(FIXTURES, entry.path), calibration: { ids: ref.ids, samples: ref.batch, seqLen: ref.seq } })
    t.deepEqual(result.experts, [])
    // Calibration stops at the last layer (the lm_head is not quantized).
    const linears = Object.keys(ref.tensors).filter((k) => k.startsWith('amax.') && k !== 'amax.lm_head')
    t.is(linears.length, 7 * entry.num_layers, 'q, k, v, o, gate, up, down per layer')
    for (const key of linears) {
      const module = key.slice('amax.'.length)
      close(t, result.inputAmax[module], ref.tensors[key].values[0], 1e-5, module)
    }
  })
}
