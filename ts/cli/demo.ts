#!/usr/bin/env node
/**
 * `npm run demo`: quantizes the bundled example model (fixtures/qwen3_moe/hub, a tiny random-weight
 * Qwen3-MoE, copied to .out/demo-model without its test references) to NVFP4 with the bundled calibration
 * text, then measures how far the quantized model's next-token distributions are from the original's. Runs
 * from a source checkout (the fixture is not published with the package).
 */
import { copyFileSync, mkdirSync, rmSync } from 'node:fs'
import * as path from 'node:path'

import { evaluateModel } from '../api/evaluate'
import { MoeQuantError } from '../errors'
import { renderEvaluation } from './eval'
import { BUNDLED_CALIBRATION, renderSummary, runQuantize } from './quantize'

const ROOT = path.join(__dirname, '..', '..')
const FIXTURE = path.join(ROOT, 'fixtures', 'qwen3_moe', 'hub')
/** The example model as a user would have it: the fixture without its test references. */
const MODEL = path.join(ROOT, '.out', 'demo-model')
const OUTPUT = path.join(ROOT, '.out', 'demo-nvfp4')
const MODEL_FILES = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']

async function demo(): Promise<number> {
  const rel = (p: string): string => path.relative(process.cwd(), p) || '.'
  rmSync(MODEL, { recursive: true, force: true })
  mkdirSync(MODEL, { recursive: true })
  for (const file of MODEL_FILES) copyFileSync(path.join(FIXTURE, file), path.join(MODEL, file))
  process.stdout.write(`Quantizing ${rel(MODEL)} to NVFP4 → ${rel(OUTPUT)} (calibration: ${rel(BUNDLED_CALIBRATION)}, 32 × 64 tokens)\n\n`)
  const result = await runQuantize({
    model: MODEL,
    output: OUTPUT,
    format: 'nvfp4',
    calibration: { data: BUNDLED_CALIBRATION, samples: 32, seqLen: 64 },
    overwrite: true,
  })
  if (typeof result === 'number') return result
  process.stdout.write(`${renderSummary(result)}\n`)
  for (const warning of result.warnings) process.stderr.write(`warning: ${warning}\n`)

  process.stdout.write('\nComparing the quantized model with the original (8 × 64 tokens of the same text)\n\n')
  const evaluation = await evaluateModel(MODEL, OUTPUT, { data: BUNDLED_CALIBRATION, samples: 8, seqLen: 64 })
  process.stdout.write(`${renderEvaluation(rel(MODEL), rel(OUTPUT), evaluation)}\n`)
  process.stdout.write(
    '\nThe example model has random weights, so these numbers show the mechanics, not a model\'s quality.\n' +
      `The quantized checkpoint is in ${OUTPUT}; look inside with: npx moe-quant inspect ${rel(OUTPUT)}\n`,
  )
  return 0
}

demo().then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    if (error instanceof MoeQuantError) process.stderr.write(`moe-quant demo: ${error.message} [${error.code}]\n`)
    else process.stderr.write(`moe-quant demo: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    process.exitCode = 1
  },
)
