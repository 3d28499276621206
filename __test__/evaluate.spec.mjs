// Running and evaluating quantized checkpoints: ModelOpt's golden exports of fixtures/qwen3_moe/hub_f32 are
// inspectable and describable through their logical (dequantized) tensors, and evaluateModel() measures how far
// their next-token distributions are from the original's. Bounds are loose pins around measured values
// (seed-0 random ids, 8×128 positions): FP8 KL mean 1.06e-5, top-1 0.955; NVFP4 KL mean 1.16e-4, top-1 0.878.
// The tiny random models are nearly uniform (perplexity ≈ vocabulary), so top-1 agreement is lower than on
// real models.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { cpSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { describeModel, evaluateModel, inspectModel, isQuantizedCheckpoint } from '../dist/index.js'
import { readListing } from '../dist/model/listing.js'
import { FIXTURES, ROOT, readJson, tempDir, writeJson } from './helpers/checkpoint.mjs'

const ORIGINAL = join(FIXTURES, 'qwen3_moe/hub_f32')
const NVFP4 = join(FIXTURES, 'golden/qwen3_moe_hub_f32/nvfp4')
const FP8 = join(FIXTURES, 'golden/qwen3_moe_hub_f32/fp8')

const cli = (...args) => spawnSync(process.execPath, [join(ROOT, 'dist/cli/main.js'), ...args], { encoding: 'utf8' })

test('a model compared with itself has zero KL and full agreement', async (t) => {
  const result = await evaluateModel(ORIGINAL, ORIGINAL)
  t.true(result.klMean >= 0 && result.klMean <= 1e-9, `KL mean ${result.klMean}`)
  t.true(result.klMax <= 1e-9)
  t.is(result.top1Agreement, 1)
  t.is(result.positions, 8 * 128)
  t.like(result, { samples: 8, requestedSamples: 8, seqLen: 128, data: { source: 'random', seed: 0 }, quantization: null })
  t.is(result.perplexity.original, result.perplexity.quantized)
})

test('FP8 and NVFP4 goldens: small positive KL, FP8 closer than NVFP4, high agreement', async (t) => {
  const fp8 = await evaluateModel(ORIGINAL, FP8)
  const nvfp4 = await evaluateModel(ORIGINAL, NVFP4)
  t.log(`FP8: KL mean ${fp8.klMean}, max ${fp8.klMax}, top-1 ${fp8.top1Agreement}`)
  t.log(`NVFP4: KL mean ${nvfp4.klMean}, max ${nvfp4.klMax}, top-1 ${nvfp4.top1Agreement}`)
  t.true(fp8.klMean > 0 && fp8.klMean < 1e-4, `FP8 KL mean ${fp8.klMean}`)
  t.true(nvfp4.klMean > 0 && nvfp4.klMean < 1e-3, `NVFP4 KL mean ${nvfp4.klMean}`)
  t.true(fp8.klMean < nvfp4.klMean)
  t.true(fp8.klMax >= fp8.klMean && nvfp4.klMax >= nvfp4.klMean && nvfp4.klMax < 0.05)
  t.true(fp8.top1Agreement > 0.9, `FP8 top-1 ${fp8.top1Agreement}`)
  t.true(nvfp4.top1Agreement > 0.8, `NVFP4 top-1 ${nvfp4.top1Agreement}`)
  t.is(fp8.quantization, 'FP8')
  t.is(nvfp4.quantization, 'NVFP4')
  t.is(nvfp4.positions, 1024)
  t.true(nvfp4.klMaxAt.sample < 8 && nvfp4.klMaxAt.position < 128)
})

test('random ids are reproducible from the seed', async (t) => {
  const a = await evaluateModel(ORIGINAL, NVFP4, { samples: 2, seqLen: 32, seed: 7 })
  const b = await evaluateModel(ORIGINAL, NVFP4, { samples: 2, seqLen: 32, seed: 7 })
  const c = await evaluateModel(ORIGINAL, NVFP4, { samples: 2, seqLen: 32, seed: 8 })
  t.deepEqual([a.klMean, a.klMax, a.top1Agreement], [b.klMean, b.klMax, b.top1Agreement])
  t.not(a.klMean, c.klMean)
  t.deepEqual(a.data, { source: 'random', seed: 7 })
  t.is(a.positions, 64)
})

test('given ids need no tokenizer (the golden directories have none)', async (t) => {
  const ids = [Array.from({ length: 24 }, (_, i) => (i * 37) % 256), Array.from({ length: 24 }, (_, i) => (i * 11 + 5) % 256)]
  const result = await evaluateModel(NVFP4, FP8, { ids, batchSize: 1 })
  t.like(result, { samples: 2, seqLen: 24, positions: 48, data: { source: 'ids' } })
  t.true(result.klMean > 0 && Number.isFinite(result.perplexity.original))
})

test('given ids are all used: a seqLen shorter than the rows cuts each into windows, as calibration does', async (t) => {
  const ids = [Array.from({ length: 24 }, (_, i) => (i * 37) % 256), Array.from({ length: 24 }, (_, i) => (i * 11 + 5) % 256)]
  const windowed = await evaluateModel(NVFP4, FP8, { ids, seqLen: 12, batchSize: 1 })
  t.like(windowed, { samples: 4, requestedSamples: 4, seqLen: 12, positions: 48 })
  const byHand = await evaluateModel(NVFP4, FP8, { ids: ids.flatMap((row) => [row.slice(0, 12), row.slice(12)]), batchSize: 1 })
  t.like(byHand, { samples: 4, seqLen: 12 })
  t.deepEqual([windowed.klMean, windowed.klMax, windowed.top1Agreement], [byHand.klMean, byHand.klMax, byHand.top1Agreement])
})

test('text data is tokenized with the original model tokenizer', async (t) => {
  const dir = tempDir()
  const data = join(dir, 'held-out.jsonl')
  const lines = Array.from({ length: 20 }, (_, i) => JSON.stringify({ text: `Held-out document ${i}: the quick brown fox jumps over the lazy dog ${i * 3} times.` }))
  writeFileSync(data, lines.join('\n'))
  const progress = []
  const result = await evaluateModel(ORIGINAL, NVFP4, { data, samples: 3, seqLen: 32, batchSize: 2, onProgress: (e) => progress.push(e) })
  t.like(result, { samples: 3, seqLen: 32, positions: 96, data: { source: 'file', path: data } })
  t.true(result.perplexity.original > 1 && result.perplexity.quantized > 1)
  // Two batches, both models, every layer; events cross threads, so only some may have arrived yet.
  t.true(progress.every((e) => e.stage === 'evaluate' && e.batches === 2 && e.layers === 2))
  t.true(progress.some((e) => e.model === 'quantized'))
})

test('the golden exports are inspectable: per-expert layout, logical shapes, scales set aside', async (t) => {
  for (const [dir, algo] of [[NVFP4, 'NVFP4'], [FP8, 'FP8']]) {
    const report = await inspectModel(dir)
    const original = await inspectModel(ORIGINAL)
    t.is(report.quantization, algo)
    t.is(report.moeLayers.length, 2)
    for (const layer of report.moeLayers) {
      t.like(layer, { layout: 'per_expert', experts: 8, topK: 2, hidden: 64, intermediate: 48 })
    }
    t.deepEqual(report.parameters, original.parameters)
    t.deepEqual(report.tensors.quantize, [])
    t.is(report.tensors.keep.filter((k) => k.reason === 'already quantized').length, 2 * (4 + 8 * 3))
    t.true(report.notes.some((n) => n.includes(`already quantized: ${algo}`)), report.notes.join('\n'))
    // The descriptor the forward runs is the original's, name for name and shape for shape.
    t.deepEqual(await describeModel(dir), await describeModel(ORIGINAL))
  }
  const listing = await readListing(NVFP4)
  const upProj = listing.tensors.find((x) => x.name === 'model.layers.0.mlp.experts.3.up_proj.weight')
  t.like(upProj, { dtype: 'U8', shape: [48, 64], quantized: 'nvfp4' })
  t.false(listing.tensors.some((x) => /\.(weight_scale|weight_scale_2|input_scale)$/.test(x.name)))
  t.is(listing.scales.length, 2 * (4 + 8 * 3) * 3)
  t.like(listing.quantization, { algo: 'NVFP4', declaredIn: 'hf_quant_config.json', producer: { name: 'modelopt' } })
})

test('isQuantizedCheckpoint reads hf_quant_config.json or config.json', async (t) => {
  t.is(await isQuantizedCheckpoint(NVFP4), 'NVFP4')
  t.is(await isQuantizedCheckpoint(FP8), 'FP8')
  t.is(await isQuantizedCheckpoint(ORIGINAL), null)
  t.is(await isQuantizedCheckpoint(join(tempDir(), 'missing')), null)

  // Only config.json's quantization_config: still recognised, and the listing still rewritten.
  const dir = join(tempDir(), 'model')
  cpSync(NVFP4, dir, { recursive: true })
  rmSync(join(dir, 'hf_quant_config.json'))
  t.is(await isQuantizedCheckpoint(dir), 'NVFP4')
  t.like((await readListing(dir)).quantization, { algo: 'NVFP4', declaredIn: 'config.json' })
  const config = readJson(join(dir, 'config.json'))
  config.quantization_config.quant_method = 'fp8'
  writeJson(join(dir, 'config.json'), config)
  t.is(await isQuantizedCheckpoint(dir), null, 'other quant methods are not ModelOpt exports')

  writeFileSync(join(dir, 'hf_quant_config.json'), '{ not json')
  await t.throwsAsync(isQuantizedCheckpoint(dir), { code: 'E_CONFIG_INVALID' })
  await t.throwsAsync(isQuantizedCheckpoint(42), { code: 'E_OPTION_INVALID' })
})

test('bad options are rejected with E_OPTION_INVALID naming the option', async (t) => {
  const cases = [
    [{ samples: 0 }, /samples/],
    [{ seqLen: 1.5 }, /seqLen/],
    [{ batchSize: -1 }, /batchSize/],
    [{ seed: -1 }, /seed/],
    [{ seed: 2 ** 32 }, /seed/],
    [{ data: '' }, /data/],
    [{ data: 'a.jsonl', ids: [[1]] }, /data, ids/],
    [{ data: 'a.jsonl', seed: 1 }, /seed/],
    [{ ids: [] }, /ids/],
    [{ ids: [[1, 2], [3]] }, /ids\[1\]/],
    [{ seq_len: 16 }, /seq_len: unknown option/],
    [{ onProgress: 'yes' }, /onProgress/],
  ]
  for (const [options, message] of cases) {
    await t.throwsAsync(evaluateModel(ORIGINAL, NVFP4, options), { code: 'E_OPTION_INVALID', message }, JSON.stringify(options))
  }
  await t.throwsAsync(evaluateModel(ORIGINAL, NVFP4, 'fast'), { code: 'E_OPTION_INVALID', message: /options/ })
  await t.throwsAsync(evaluateModel(ORIGINAL), { code: 'E_OPTION_INVALID', message: /quantized/ })
  await t.throwsAsync(evaluateModel(ORIGINAL, NVFP4, { ids: [[1, 256]] }), { code: 'E_CALIBRATION_ID_RANGE' })
  await t.throwsAsync(evaluateModel(ORIGINAL, NVFP4, { data: join(tempDir(), 'missing.jsonl') }), { code: 'E_IO' })
})

test('an aborted evaluation rejects with E_CANCELLED', async (t) => {
  const controller = new AbortController()
  controller.abort()
  await t.throwsAsync(evaluateModel(ORIGINAL, NVFP4, { signal: controller.signal }), { code: 'E_CANCELLED' })
})

test('the eval command prints a table, or JSON', (t) => {
  const run = cli('eval', ORIGINAL, NVFP4, '--samples', '2', '--seq-len', '32')
  t.is(run.status, 0, run.stderr)
  t.regex(run.stdout, /\(NVFP4\)/)
  t.regex(run.stdout, /KL mean\s+KL max\s+top-1 agreement\s+positions\s+data/)
  t.regex(run.stdout, /\d\.\d+e-\d+\s+\d\.\d+e-\d+\s+\d+\.\d\d%\s+2×32 = 64\s+random ids \(seed 0\)/)

  const json = cli('eval', ORIGINAL, FP8, '--samples=2', '--seq-len=16', '--json')
  t.is(json.status, 0, json.stderr)
  const result = JSON.parse(json.stdout)
  t.like(result, { positions: 32, quantization: 'FP8', data: { source: 'random', seed: 0 } })
  t.true(result.klMean > 0)
})

test('eval usage errors exit with status 2', (t) => {
  for (const args of [['eval', ORIGINAL], ['eval', ORIGINAL, NVFP4, '--samples', '0'], ['eval', ORIGINAL, NVFP4, '--seq-len'], ['eval', ORIGINAL, NVFP4, '--sampels', '2']]) {
    const run = cli(...args)
    t.is(run.status, 2, args.join(' '))
    t.regex(run.stderr, /\(moe-quant eval --help lists the options\) \[E_OPTION_INVALID\]\n$/)
  }
  t.regex(cli('eval', ORIGINAL, NVFP4, '--samples', 'x').stderr, /--samples: expected a positive integer/)
  t.regex(cli('eval', ORIGINAL, NVFP4, '--sampels', '2').stderr, /unknown option --sampels \(did you mean --samples\?\)/)
  t.regex(cli('eval', ORIGINAL, NVFP4, '--device', 'gpu').stderr, /--device: expected cpu, cuda or cuda:N/)
  const help = cli('eval', '--help')
  t.is(help.status, 0)
  t.regex(help.stdout, /moe-quant eval ORIGINAL QUANTIZED/)
})

test('eval shows progress on stderr and accepts --device', (t) => {
  const run = cli('eval', ORIGINAL, NVFP4, '--samples', '2', '--seq-len', '8', '--device', 'cpu')
  t.is(run.status, 0, run.stderr)
  t.regex(run.stderr, /^moe-quant: evaluate: started, batch 1\/\d+, original model \d\/2 layers\n/)
  t.regex(run.stderr, /moe-quant: evaluate: done, batch \d+\/\d+, quantized model 2\/2 layers, [\d.]+s elapsed\n$/)
  const cuda = cli('eval', ORIGINAL, NVFP4, '--samples', '2', '--seq-len', '8', '--device', 'cuda')
  t.is(cuda.status, 1)
  t.regex(cuda.stderr, /\[E_DEVICE_UNAVAILABLE\]/)
})
