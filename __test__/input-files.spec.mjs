// The input's files besides the weights: which are copied into the output (an allow-list of what engines and
// transformers read beside a checkpoint), which are left behind and listed, and inputs laid out as the
// Hugging Face download cache, where every file of a snapshot is a symbolic link into blobs/.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { copyFileSync, lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { quantizeModel } from '../dist/index.js'
import { FIXTURES, copyFixture, tempDir } from './helpers/checkpoint.mjs'

const calibration = { ids: [[1, 5, 9, 13, 17, 21, 25, 29]], samples: 1, seqLen: 8 }
const options = (model, output) => ({ model, output, format: 'fp8', calibration, coverageReport: false })
const SERVING_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json']

test('a snapshot of the Hugging Face cache (every file a link into blobs/) gives a complete output', async (t) => {
  const repo = join(tempDir(), 'models--tiny--qwen3-moe')
  const snapshot = join(repo, 'snapshots', '0123abcd')
  mkdirSync(join(repo, 'blobs'), { recursive: true })
  mkdirSync(snapshot, { recursive: true })
  const source = join(FIXTURES, 'qwen3_moe/hub')
  for (const [i, file] of [...SERVING_FILES, 'model.safetensors'].entries()) {
    copyFileSync(join(source, file), join(repo, 'blobs', `blob${i}`))
    symlinkSync(`../../blobs/blob${i}`, join(snapshot, file))
  }
  const output = join(tempDir(), 'out')
  const result = await quantizeModel(options(snapshot, output))
  for (const file of ['generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) {
    t.true(lstatSync(join(output, file)).isFile(), `${file} is copied as a file`)
    t.deepEqual(readFileSync(join(output, file)), readFileSync(join(source, file)), file)
  }
  t.deepEqual(result.skippedFiles, [])
})

test('only the files serving engines read are copied; stray weights and other files are listed as left behind', async (t) => {
  const model = copyFixture('qwen3_moe/hub')
  const copied = ['chat_template.jinja', 'special_tokens_map.json', 'preprocessor_config.json', 'configuration_tiny.py', 'modeling_tiny.py', 'README.md', 'LICENSE']
  const stray = ['consolidated.safetensors', 'pytorch_model.bin', 'notes.txt', 'run.sh']
  for (const file of [...copied, ...stray]) writeFileSync(join(model, file), `${file}\n`)
  // Not regular files: a FIFO and a link to nothing are neither copied nor listed.
  execFileSync('mkfifo', [join(model, 'tokenizer.model')])
  symlinkSync(join(model, 'nowhere'), join(model, 'vocab.json'))
  const output = join(tempDir(), 'out')
  const result = await quantizeModel(options(model, output))
  const written = ['hf_quant_config.json', 'model.safetensors', 'moe-quant-run.json']
  t.deepEqual(readdirSync(output).sort(), [...SERVING_FILES, ...copied, ...written].sort())
  // The fixture's own reference.safetensors (transformers' logits) is a stray weight file too.
  t.deepEqual(result.skippedFiles, [...stray, 'reference.safetensors'].sort())
  const warning = result.warnings.find((w) => w.includes('not part of its checkpoint'))
  t.truthy(warning, result.warnings.join('\n'))
  t.regex(warning, /3 weight file\(s\).*consolidated\.safetensors, pytorch_model\.bin, reference\.safetensors/)
})
