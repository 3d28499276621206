// Writes the model descriptors of a few fixtures (and the export plans of some) to fixtures/descriptors/ so
// that Rust tests (and the GPU checks) can run the forward and quantize without the TypeScript side.
// Regenerate after `npm run build:ts` with:
//   node tools/write_descriptors.mjs
// __test__/descriptor.spec.mjs checks that the committed files equal freshly built ones.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { describeModel } from '../dist/index.js'
import { describeListing } from '../dist/model/spec/index.js'
import { planExport } from '../dist/export/plan.js'
import { readListing } from '../dist/model/listing.js'

export const DESCRIBED = [
  'qwen3_moe/hub',
  'qwen2_moe/fused',
  'mixtral/hub',
  'deepseek_v3/hub',
  'glm4_moe/fused',
  'granitemoe/hub',
  'gpt_oss/hub',
  'llama4_text/hub',
  'families/qwen3_next/hub',
  'families/qwen3_5_moe_text/fused',
  'families/granitemoehybrid/hub',
  'families/nemotron_h/hub',
  'families/deepseek_v32/hub',
  'families/glm_moe_dsa/fused',
  'families/jamba/hub',
  'families/lfm2_moe/hub',
  'families/minimax/hub',
  'families/longcat_flash/hub',
  'families/gemma4_text/hub',
  'families/kimi_linear/hub',
]
export const descriptorFile = (fixture) => `${fixture.replaceAll('/', '_')}.json`

/**
 * Fixtures whose FP8 and NVFP4 export plans are committed too (fixtures/descriptors/plans/), built as
 * quantizeModel() builds them with its defaults: the GPU quantization test runs them without the TypeScript side.
 * Every expert form is here: per-expert gate/up/down (Qwen3, DeepSeek-V3 with a shared expert) and w1/w3/w2
 * (Mixtral), transformers 5's fused stacks read per expert (Qwen2-MoE), stacks written whole (GPT-OSS) and
 * ungated experts (Nemotron-H).
 */
export const PLANNED = ['qwen3_moe/hub', 'mixtral/hub', 'qwen2_moe/fused', 'deepseek_v3/hub', 'gpt_oss/hub', 'families/nemotron_h/hub']
export const PLAN_FORMATS = ['fp8', 'nvfp4']
export const planFile = (fixture, format) => join('plans', `${fixture.replaceAll('/', '_')}.${format}.json`)

/** The export plan quantizeModel() runs for `fixture` in `format` (defaults; no files copied beside). */
export async function fixturePlan(dir, format) {
  const listing = await readListing(dir)
  const { report, descriptor } = describeListing(listing)
  const { plan } = planExport(report, descriptor, listing, {
    format, exclude: [], indivisible: 'error', scope: 'all', kvCache: 'fp8_cast', maxShardBytes: 5e9, overwrite: true,
    tool: { name: 'moe-quant', version: 'fixture' },
  })
  return plan
}

const root = join(fileURLToPath(import.meta.url), '..', '..')
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const fixture of DESCRIBED) {
    const descriptor = await describeModel(join(root, 'fixtures', fixture))
    writeFileSync(join(root, 'fixtures', 'descriptors', descriptorFile(fixture)), `${JSON.stringify(descriptor, null, 1)}\n`)
  }
  mkdirSync(join(root, 'fixtures', 'descriptors', 'plans'), { recursive: true })
  for (const fixture of PLANNED) {
    for (const format of PLAN_FORMATS) {
      const plan = await fixturePlan(join(root, 'fixtures', fixture), format)
      writeFileSync(join(root, 'fixtures', 'descriptors', planFile(fixture, format)), `${JSON.stringify(plan, null, 1)}\n`)
    }
  }
}
