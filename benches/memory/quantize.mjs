// The measured side of the memory benchmark (benches/memory/run.sh): quantizes a checkpoint through the public
// TypeScript API, quantizeModel() from dist/, on the CPU, with pre-tokenized calibration ids (so the
// checkpoint needs no tokenizer). Progress goes to stderr, one line per event with the process's resident
// memory at that moment (VmRSS of /proc/self/status: Node and the native addon together); the result goes to
// stdout as one JSON line, with the addon's own peak (peakRssBytes, VmHWM read when the native run ends).
//
//   npm run build
//   node benches/memory/quantize.mjs MODEL_DIR OUT_DIR [--ids calib_ids.json] [--format nvfp4]
//        [--device cpu] [--max-shard-size 5GB]
//
// --ids defaults to MODEL_DIR/calib_ids.json (written by make_big_checkpoint): sequences of ids, all as long
// as the first; their count and length are the calibration's samples and seqLen.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

import { quantizeModel } from '../../dist/index.js'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    ids: { type: 'string' },
    format: { type: 'string', default: 'nvfp4' },
    device: { type: 'string', default: 'cpu' },
    'max-shard-size': { type: 'string', default: '5GB' },
  },
})
const [model, output] = positionals
if (!model || !output) {
  console.error('usage: quantize.mjs MODEL_DIR OUT_DIR [--ids FILE] [--format nvfp4|fp8] [--device cpu] [--max-shard-size 5GB]')
  process.exit(2)
}

/** Resident and peak resident memory of this process, in bytes (Linux). */
function rss() {
  const status = readFileSync('/proc/self/status', 'utf8')
  const kib = (key) => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? Number.NaN) * 1024
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') }
}
const gib = (b) => (b / 2 ** 30).toFixed(2)

const ids = JSON.parse(readFileSync(values.ids ?? join(model, 'calib_ids.json'), 'utf8'))
const started = performance.now()
const seconds = () => ((performance.now() - started) / 1000).toFixed(1)
let result
try {
  result = await quantizeModel({
    model,
    output,
    format: values.format,
    device: values.device,
    maxShardSize: values['max-shard-size'],
    overwrite: true,
    coverageReport: false,
    calibration: { ids, samples: ids.length, seqLen: ids[0].length },
    onProgress: (e) => {
      const m = rss()
      console.error(`[${seconds()} s] ${e.stage} ${e.layer}/${e.layers}  written ${gib(e.bytesWritten)} GiB  RSS ${gib(m.rss)} GiB  peak ${gib(m.hwm)} GiB`)
    },
  })
} catch (error) {
  console.error(`quantize failed after ${seconds()} s: [${error.code ?? '?'}] ${error.message}`)
  process.exit(1)
}
const m = rss()
console.log(
  JSON.stringify({
    wallSeconds: (performance.now() - started) / 1000,
    peakRssBytes: result.peakRssBytes,
    processPeakRssBytes: m.hwm,
    sizeBytes: result.sizeBytes,
    tokens: result.tokens,
    quantizedTensors: result.quantizedTensors,
    layers: result.layers.length,
    seconds: result.seconds,
    maxRelativeMse: Math.max(...result.layers.map((l) => l.relativeMse)),
    uncalibratedExperts: result.uncalibratedExperts.reduce((n, l) => n + l.experts.length, 0),
  }),
)
