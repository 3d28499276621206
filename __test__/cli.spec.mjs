// The `moe-quant` command line, run as a user would.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'

import { inspectModel } from '../dist/index.js'
import { FIXTURES, ROOT, tempDir } from './helpers/checkpoint.mjs'

const cli = (...args) => spawnSync(process.execPath, [join(ROOT, 'dist/cli/main.js'), ...args], { encoding: 'utf8' })

test('inspect prints a readable table', (t) => {
  const run = cli('inspect', join(FIXTURES, 'qwen2_moe/hub'))
  t.is(run.status, 0, run.stderr)
  t.regex(run.stdout, /qwen2_moe\s+Qwen2-MoE\s+2\s+64\s+BF16/)
  t.regex(run.stdout, /0-1\s+per_expert\s+8\s+2\s+64\s+48\s+softmax_topk\s+I=80, gated/)
  t.regex(run.stdout, /tensors: 62 to quantize, 17 kept/)
})

test('inspect --json prints the same data as inspectModel()', async (t) => {
  const dir = join(FIXTURES, 'mixtral/hub_sharded')
  const run = cli('inspect', dir, '--json')
  t.is(run.status, 0, run.stderr)
  t.deepEqual(JSON.parse(run.stdout), JSON.parse(JSON.stringify(await inspectModel(dir))))
})

test('errors exit with status 1 and name the code, without a stack trace', (t) => {
  const run = cli('inspect', join(tempDir(), 'missing'))
  t.is(run.status, 1)
  t.regex(run.stderr, /^moe-quant: .*missing.*\[E_IO\]\n$/s)
})

test('usage errors', (t) => {
  t.is(cli('inspect').status, 1)
  t.regex(cli('frobnicate').stderr, /unknown command "frobnicate"/)
  t.regex(cli('inspect', 'x', '--jsn').stderr, /unknown option --jsn/)
  const help = cli('--help')
  t.is(help.status, 0)
  t.regex(help.stdout, /moe-quant inspect DIR/)
})

test('the demo quantizes and evaluates the example model without a warning', (t) => {
  const run = spawnSync(process.execPath, [join(ROOT, 'dist/cli/demo.js')], { encoding: 'utf8' })
  t.is(run.status, 0, run.stderr)
  t.regex(run.stdout, /^format {16}NVFP4$/m)
  t.regex(run.stdout, /KL mean/)
  t.notRegex(run.stderr, /warning/i)
  t.notRegex(run.stdout, /files not copied/)
})
