// `moe-quant quantize`: flag parsing and validation, the summary and progress rendering, and real CLI runs on
// the bundled example model (JSON output, usage errors, Ctrl-C).
import test from 'ava'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { BUNDLED_CALIBRATION, parseQuantizeArgs, renderSummary } from '../dist/cli/quantize.js'
import { bar, createProgress, duration, quantizeStage } from '../dist/cli/progress.js'
import { FIXTURES, ROOT, readTensors, tempDir } from './helpers/checkpoint.mjs'

const MAIN = join(ROOT, 'dist/cli/main.js')
const cli = (...args) => spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' })
const parse = (...argv) => parseQuantizeArgs(argv)
const base = ['model', '--format', 'nvfp4', '--out', 'out']

test('the minimal command line, with the bundled calibration text by default', (t) => {
  t.deepEqual(parse(...base), {
    help: false,
    json: false,
    options: { model: 'model', output: 'out', format: 'nvfp4', calibration: { data: BUNDLED_CALIBRATION } },
  })
  t.is(BUNDLED_CALIBRATION, join(ROOT, 'examples', 'calibration.jsonl'))
})

test('every flag, in both --flag value and --flag=value spellings', (t) => {
  const parsed = parse(
    'model', '--format=FP8', '--out', 'out', '--calib', 'c.jsonl', '--samples', '64', '--seq-len=256', '--batch-size', 'auto',
    '--max-shard-size', '500MB', '--exclude', '*visual*', '--exclude=model.layers.0.*', '--device', 'cpu', '--overwrite',
    '--all-experts', '--no-coverage', '--json', '--kv-cache', 'fp8',
  )
  t.deepEqual(parsed, {
    help: false,
    json: true,
    options: {
      model: 'model',
      output: 'out',
      format: 'fp8',
      calibration: { data: 'c.jsonl', samples: 64, seqLen: 256, batchSize: 'auto', allExperts: true },
      device: 'cpu',
      maxShardSize: '500MB',
      exclude: ['*visual*', 'model.layers.0.*'],
      overwrite: true,
      kvCache: 'fp8',
      coverageReport: false,
    },
  })
  t.is(parse(...base, '--batch-size', '8').options.calibration.batchSize, 8)
  t.is(parse(...base, '--max-shard-size', '1000000').options.maxShardSize, 1_000_000)
  t.is(parse(...base, '--max-shard-size', '1.5GiB').options.maxShardSize, '1.5GiB')
  t.is(parse(...base, '--keep-indivisible').options.indivisible, 'keep')
  t.is(parse(...base, '--device', 'cuda:1').options.device, 'cuda:1')
  t.is(parse(...base, '--kv-cache=none').options.kvCache, 'none')
  t.is(parse('m', '--format', 'w4a16_nvfp4', '--out', 'o', '--kv-cache', 'fp8_cast').options.kvCache, 'fp8_cast')
  t.false('kvCache' in parse(...base).options, "left out, the library's default applies")
  t.throws(() => parse('--', '-model-', '--format', 'fp8', '--out', 'o'), { message: /one model directory, got 5/ }, 'everything after -- is positional')
  t.is(parse('--format', 'fp8', '--out', 'o', '--', '-model-').options.model, '-model-')
  t.deepEqual(parse(...base, '--help'), { help: true })
  t.deepEqual(parse('-h'), { help: true })
})

test('numbers are parsed strictly', (t) => {
  for (const bad of ['0', '-5', '1e3', '3.0', '0x10', '12abc', ' 5', '+5', '', '9007199254740993', 'auto']) {
    const error = t.throws(() => parse(...base, '--samples', bad), { code: 'E_OPTION_INVALID' }, bad)
    t.regex(error.message, bad === '' ? /--samples/ : /--samples: expected a positive integer/)
  }
  t.throws(() => parse(...base, '--seq-len', '1.5'), { code: 'E_OPTION_INVALID', message: /--seq-len/ })
  t.throws(() => parse(...base, '--batch-size', 'Auto'), { code: 'E_OPTION_INVALID', message: /--batch-size/ })
  for (const bad of ['5XB', 'GB', '0GB', '-1', '5 G', 'lots']) {
    t.throws(() => parse(...base, '--max-shard-size', bad), { code: 'E_OPTION_INVALID', message: /--max-shard-size/ }, bad)
  }
})

test('usage errors name the flag', (t) => {
  const cases = [
    [[], /needs the model directory/],
    [['a', 'b', '--format', 'fp8', '--out', 'o'], /one model directory, got 2/],
    [['m', '--out', 'o'], /--format is required/],
    [['m', '--format', 'int4', '--out', 'o'], /--format: expected fp8 or nvfp4 or w4a16_nvfp4 or fp8_pc_pt or fp8_pb_wo or mxfp8 or mxfp4 or int4_awq or w4a8_awq or nvfp4_awq, got "int4"/],
    [['m', '--format', 'fp8'], /--out is required/],
    [['m', '--format', 'fp8', '--out'], /--out needs a value/],
    [['m', '--format', '--out', 'o'], /--format needs a value/],
    [['m', '--format', 'fp8', '--format', 'nvfp4', '--out', 'o'], /--format given more than once/],
    [[...base, '--samples', '1', '--samples', '2'], /--samples given more than once/],
    [[...base, '--frobnicate'], /unknown option --frobnicate/],
    [[...base, '--json=yes'], /--json takes no value/],
    [[...base, '--exclude='], /--exclude: expected a value/],
    [[...base, '--device', 'gpu'], /--device: expected cpu, cuda or cuda:N/],
    [['m', '--format', 'fp8', '--out', 'o', '--keep-indivisible'], /--keep-indivisible applies to the block formats only \(nvfp4, w4a16_nvfp4, mxfp8, mxfp4, int4_awq, w4a8_awq, nvfp4_awq\)/],
    [[...base, '--kv-cache', 'int8'], /^--kv-cache: expected fp8 or fp8_cast or none, got "int8"$/],
    [[...base, '--kv-cache', 'fp8-cast'], /^--kv-cache: expected fp8 or fp8_cast or none, got "fp8-cast" \(did you mean fp8_cast\?\)$/],
    [['m', '--format', 'fp8_pc_pt', '--out', 'o', '--kv-cache', 'fp8'], /^--kv-cache fp8 calibrates the key and value scales: --format fp8_pc_pt is weight-only and runs no calibration \(use --kv-cache fp8_cast\)$/],
  ]
  for (const [argv, message] of cases) t.throws(() => parseQuantizeArgs(argv), { code: 'E_OPTION_INVALID', message }, argv.join(' '))
})

test('the bundled calibration text: about 200 JSONL lines of text, under 100 KB', (t) => {
  const text = readFileSync(BUNDLED_CALIBRATION, 'utf8')
  t.true(statSync(BUNDLED_CALIBRATION).size < 100_000)
  const lines = text.trimEnd().split('\n').map((line) => JSON.parse(line))
  t.true(lines.length >= 190 && lines.length <= 220, String(lines.length))
  t.true(lines.every((l) => typeof l.text === 'string' && l.text.length > 100))
  t.is(new Set(lines.map((l) => l.text)).size, lines.length)
  t.true(lines.some((l) => /def |function |SELECT /.test(l.text)), 'has code')
  t.true(lines.some((l) => /\d+\.\d+/.test(l.text)), 'has numbers')
})

const result = (layers) => ({
  output: '/models/out',
  format: 'nvfp4',
  sizeBytes: { before: 4 * 2 ** 30, after: 2 ** 30 },
  layers: Array.from({ length: layers }, (_, i) => ({ layer: i, tensors: 28, relativeMse: (i + 1) * 1e-3 })),
  uncalibratedExperts: [{ layer: 1, experts: [3, 5] }],
  keptIndivisible: [],
  skippedFiles: [],
  quantizedTensors: 12345,
  quantizedOnDevice: 0,
  warnings: [],
  coverageReportPath: '/models/out.coverage.html',
  peakRssBytes: 3 * 2 ** 20,
  seconds: { calibrate: 12.34, load: 4.5, forward: 7.8, quantizeOnDevice: 0, quantize: 0.5, write: 2, total: 15 },
  tokens: 2048,
  kvCache: 'fp8_cast',
})

test('the summary: sizes and ratio, tensors, per-layer error, uncalibrated experts, RSS, times, output', (t) => {
  const small = renderSummary(result(2))
  t.regex(small, /^format {16}NVFP4$/m)
  t.regex(small, /^KV cache {14}FP8, constant scale$/m)
  t.regex(renderSummary({ ...result(2), kvCache: 'fp8' }), /^KV cache {14}FP8, calibrated scales$/m)
  t.regex(renderSummary({ ...result(2), kvCache: 'none' }), /^KV cache {14}not quantized$/m)
  t.regex(small, /^size {18}4\.0 GiB → 1\.0 GiB \(4\.00× smaller\)$/m)
  t.regex(small, /^quantized tensors {5}12,345$/m)
  t.regex(small, /^uncalibrated experts  layer 1: 2 \(3, 5\)$/m)
  t.regex(small, /^coverage report {7}\/models\/out\.coverage\.html$/m)
  t.regex(small, /^peak RSS {14}3\.0 MiB$/m)
  t.regex(small, /^time {18}calibrate 12\.3 s \(load 4\.5 s, forward 7\.8 s\), quantize 0\.50 s, write 2\.0 s, total 15\.0 s$/m)
  t.regex(small, /^output {16}\/models\/out$/m)
  const gpu = renderSummary({ ...result(2), quantizedOnDevice: 12000, seconds: { ...result(2).seconds, quantizeOnDevice: 0.25 } })
  t.regex(gpu, /^quantized tensors {5}12,345 \(12,000 on the GPU\)$/m)
  t.regex(gpu, /^time {18}calibrate 12\.3 s \(load 4\.5 s, forward 7\.8 s, experts quantized on the GPU 0\.25 s\), quantize 0\.50 s, write 2\.0 s, total 15\.0 s$/m)
  t.regex(small, /^1 {6}28 {7}2\.00e-3$/m)
  t.notRegex(small, /relative MSE +min/)
  const large = renderSummary(result(9))
  t.regex(large, /^relative MSE {10}min 1\.00e-3, median 5\.00e-3, max 9\.00e-3 over 9 layers$/m)
})

test('progress: bars redrawn in place on a terminal, a plain line per stage start and end otherwise', (t) => {
  t.is(bar(1, 2, 4), '[██░░]')
  t.is(bar(0, 0, 2), '[░░]')
  t.deepEqual([duration(4.2), duration(65), duration(3725)], ['4.2s', '1m05s', '1h02m'])
  const event = (stage, layer, bytesWritten = 0, batch = 4) => ({ stage, layer, layers: 2, tokens: 512, batch, batches: 4, bytesWritten })
  const plain = []
  let time = 0
  const log = createProgress({ write: (s) => plain.push(s), isTTY: false }, { now: () => time, heartbeatMs: 0 })
  // One event each half second, from the start.
  for (const e of [event('calibrate', 0, 0, 2), event('calibrate', 1), event('quantize', 1, 1024), event('calibrate', 2, 1024), event('quantize', 2, 4096), event('write', 2, 4096)]) {
    time += 500
    log.update(quantizeStage(e))
  }
  log.stop()
  t.deepEqual(plain, [
    'moe-quant: calibrate: started, 0/2 layers (batch 2/4), 512 tokens/layer\n',
    'moe-quant: quantize: started, 1/2 layers, 1.0 KiB written\n',
    // 512 tokens through both layers in 2 s.
    'moe-quant: calibrate: done, 2/2 layers, 512 tokens/layer, 256 tokens/s, 2.0s elapsed\n',
    'moe-quant: quantize: done, 2/2 layers, 4.0 KiB written, 2.5s elapsed\n',
    'moe-quant: write: started, finishing the checkpoint, 4.0 KiB written\n',
  ])
  const screen = []
  time = 0
  const bars = createProgress({ write: (s) => screen.push(s), isTTY: true, columns: 200 }, { now: () => time })
  time = 1000
  bars.update(quantizeStage(event('calibrate', 0, 0, 2)))
  time = 3000
  bars.update(quantizeStage(event('quantize', 1, 2048)))
  bars.stop()
  bars.update(quantizeStage(event('calibrate', 2)))
  t.is(screen.length, 3, 'first events draw at once; stop draws the final state; nothing after stop')
  t.true(screen[1].startsWith('\x1b[1F\x1b[2Kcalibrate '))
  // At 3 s: calibration a quarter done (128 tokens through the model; 9 s to go), quantization half (3 s).
  t.regex(screen[2], /^\x1b\[2F\x1b\[2Kcalibrate +\[█{6}░{18}\] 0\/2 layers \(batch 2\/4\), 512 tokens\/layer · 43 tokens\/s · 3\.0s elapsed · ETA 9\.0s\n/)
  t.regex(screen[2], /\n\x1b\[2Kquantize +\[█{12}░{12}\] 1\/2 layers, 2\.0 KiB written · 3\.0s elapsed · ETA 3\.0s\n$/)
})

test('progress: a heartbeat line every few seconds when the output is not a terminal', async (t) => {
  const lines = []
  const log = createProgress({ write: (s) => lines.push(s), isTTY: false }, { heartbeatMs: 20 })
  log.update(quantizeStage({ stage: 'calibrate', layer: 1, layers: 4, tokens: 64, batch: 1, batches: 2, bytesWritten: 0 }))
  const beats = () => lines.filter((l) => l.startsWith('moe-quant: calibrate: 1/4 layers (batch 1/2)'))
  for (let waited = 0; beats().length < 2 && waited < 5000; waited += 10) await new Promise((resolve) => setTimeout(resolve, 10))
  log.stop()
  t.true(beats().length >= 2, lines.join(''))
  t.regex(beats()[0], /tokens\/s, \d+\.\ds elapsed, ETA /)
  const count = lines.length
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.is(lines.length, count, 'no heartbeat after stop')
})

test('CLI: usage errors exit 2 with the code; --help exits 0', (t) => {
  const run = cli('quantize', join(FIXTURES, 'qwen3_moe/hub'), '--format', 'fp8', '--out', join(tempDir(), 'o'), '--samples', '12x')
  t.is(run.status, 2)
  t.regex(run.stderr, /^moe-quant: --samples: expected a positive integer, got "12x"\n.*--help.* \[E_OPTION_INVALID\]\n$/s)
  const missing = cli('quantize', join(FIXTURES, 'qwen3_moe/hub'), '--format', 'fp8', '--out', join(tempDir(), 'o'), '--calib', join(tempDir(), 'none.jsonl'))
  t.is(missing.status, 2)
  t.regex(missing.stderr, /--calib: no such file .*none\.jsonl\n.* \[E_OPTION_INVALID\]/)
  const help = cli('quantize', '--help')
  t.is(help.status, 0)
  t.regex(help.stdout, /--max-shard-size SIZE/)
  t.regex(cli('--help').stdout, /moe-quant quantize DIR --format fp8\|nvfp4 --out OUT/)
})

const HAVE_QUANTIZE = existsSync(join(ROOT, 'dist/api/quantize.js'))
const real = HAVE_QUANTIZE ? test : test.skip
// Before the file's concurrent tests: their spawnSync calls block this worker's event loop for seconds, so the signal
// would reach the child only after it had finished.
const realSerial = HAVE_QUANTIZE ? test.serial : test.skip
const skipNote = HAVE_QUANTIZE ? '' : ' (skipped: dist/api/quantize.js is missing; build ts/api/quantize.ts first)'

real(`CLI: a real run on the example model with --json and a calibrated KV cache${skipNote}`, (t) => {
  const dir = tempDir()
  const out = join(dir, 'qwen3-nvfp4')
  const run = cli('quantize', join(FIXTURES, 'qwen3_moe/hub'), '--format', 'nvfp4', '--out', out, '--samples', '8', '--seq-len', '32', '--json', '--kv-cache', 'fp8')
  t.is(run.status, 0, run.stderr)
  const result = JSON.parse(run.stdout)
  t.is(result.output, out)
  t.is(result.format, 'nvfp4')
  t.is(result.layers.length, 2)
  t.true(result.quantizedTensors > 0)
  t.true(result.sizeBytes.after < result.sizeBytes.before)
  t.is(result.tokens, 8 * 32)
  t.is(result.coverageReportPath, join(out, 'moe-quant-coverage.html'))
  t.true(existsSync(result.coverageReportPath))
  t.regex(run.stderr, /calibrate: started/)
  const hf = JSON.parse(readFileSync(join(out, 'hf_quant_config.json'), 'utf8'))
  t.is(hf.quantization.quant_algo, 'NVFP4')
  t.deepEqual(hf.quantization.exclude_modules, ['lm_head', 'model.embed_tokens', 'model.layers.0.mlp.gate', 'model.layers.1.mlp.gate'])
  t.is(hf.quantization.kv_cache_quant_algo, 'FP8')
  t.is(result.kvCache, 'fp8')
  const golden = JSON.parse(readFileSync(join(FIXTURES, 'golden/qwen3_moe_hub_f32/nvfp4_kv_fp8/config.json'), 'utf8'))
  t.deepEqual(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).quantization_config, golden.quantization_config)
  const kvScales = Object.keys(readTensors(join(out, 'model.safetensors'))).filter((n) => /\.(k_proj\.k_scale|v_proj\.v_scale)$/.test(n))
  t.deepEqual(kvScales.sort(), ['model.layers.0.self_attn.k_proj.k_scale', 'model.layers.0.self_attn.v_proj.v_scale', 'model.layers.1.self_attn.k_proj.k_scale', 'model.layers.1.self_attn.v_proj.v_scale'])
})

real(`CLI: the summary table, then --overwrite and --no-coverage${skipNote}`, (t) => {
  const dir = tempDir()
  const out = join(dir, 'fp8')
  const args = ['quantize', join(FIXTURES, 'qwen3_moe/hub'), '--format', 'fp8', '--out', out, '--samples', '4', '--seq-len', '16', '--no-coverage']
  const first = cli(...args)
  t.is(first.status, 0, first.stderr)
  t.regex(first.stdout, /^format {16}FP8$/m)
  t.regex(first.stdout, /^KV cache {14}FP8, constant scale$/m)
  t.regex(first.stdout, /^layer +tensors +relative MSE$/m)
  t.regex(first.stdout, new RegExp(`^output {16}${out}$`, 'm'))
  t.deepEqual(readdirSync(dir), ['fp8'])
  t.is(cli(...args).status, 1, 'a non-empty output needs --overwrite')
  t.is(cli(...args, '--overwrite').status, 0)
})

for (const [signal, status, said] of [['SIGINT', 130, 'interrupted'], ['SIGTERM', 143, 'terminated \\(SIGTERM\\)']]) {
  realSerial(`CLI: ${signal} cancels, exits ${status} with one line and leaves nothing behind${skipNote}`, async (t) => {
    const dir = tempDir()
    const out = join(dir, 'out')
    // Enough calibration work that layer 1 is still running when the first layer's progress line arrives.
    const child = spawn(process.execPath, [MAIN, 'quantize', join(FIXTURES, 'qwen3_moe/hub'), '--format', 'fp8', '--out', out, '--samples', '40', '--seq-len', '256'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stderr = ''
    let stdout = ''
    child.stdout.on('data', (chunk) => (stdout += chunk))
    const code = await new Promise((resolve) => {
      child.stderr.on('data', (chunk) => {
        stderr += chunk
        if (stderr.includes('calibrate: started') && !child.killed) child.kill(signal)
      })
      child.on('close', resolve)
    })
    t.is(code, status, stderr)
    t.is(stdout, '')
    t.regex(stderr, new RegExp(`\\nmoe-quant: ${said}, stopping at the next layer boundary .*… cancelled; nothing was written to .*\\n$`))
    t.deepEqual(readdirSync(dir), [])
  })
}

test('CLI: errors are worded with flags, close misspellings get a suggestion, --exclude must match a module', (t) => {
  const model = join(FIXTURES, 'qwen3_moe/hub')
  const format = cli('quantize', model, '--format', 'nvpf4', '--out', join(tempDir(), 'o'))
  t.is(format.status, 2)
  t.regex(format.stderr, /--format: expected fp8 or nvfp4 or w4a16_nvfp4 or fp8_pc_pt or fp8_pb_wo or mxfp8 or mxfp4 or int4_awq or w4a8_awq or nvfp4_awq, got "nvpf4" \(did you mean nvfp4\?\)/)
  const flag = cli('quantize', model, '--format', 'fp8', '--out', join(tempDir(), 'o'), '--overwirte')
  t.regex(flag.stderr, /unknown option --overwirte \(did you mean --overwrite\?\)/)
  const busy = tempDir()
  writeFileSync(join(busy, 'mine.txt'), 'mine')
  const taken = cli('quantize', model, '--format', 'fp8', '--out', busy, '--samples', '2', '--seq-len', '8')
  t.is(taken.status, 1)
  t.regex(taken.stderr, /exists and is not empty; pass --overwrite to replace it \[E_OUTPUT_INVALID\]/)
  const out = join(tempDir(), 'o')
  const nothing = cli('quantize', model, '--format', 'fp8', '--out', out, '--exclude', 'model.layers.*.self_atn.*', '--samples', '2', '--seq-len', '8')
  t.is(nothing.status, 1)
  t.regex(nothing.stderr, /^moe-quant: --exclude: "model\.layers\.\*\.self_atn\.\*" matches no module of this model \(patterns match whole module names with \* wildcards, e\.g\. /)
  t.false(existsSync(out))
})
