// Writes the model descriptors of a few fixtures to fixtures/descriptors/ so that Rust tests (and the GPU
// checks) can run the forward without the TypeScript side. Regenerate after `npm run build:ts` with:
//   node tools/write_descriptors.mjs
// __test__/descriptor.spec.mjs checks that the committed files equal freshly built descriptors.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { describeModel } from '../dist/index.js'

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

const root = join(fileURLToPath(import.meta.url), '..', '..')
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const fixture of DESCRIBED) {
    const descriptor = await describeModel(join(root, 'fixtures', fixture))
    writeFileSync(join(root, 'fixtures', 'descriptors', descriptorFile(fixture)), `${JSON.stringify(descriptor, null, 1)}\n`)
  }
}
