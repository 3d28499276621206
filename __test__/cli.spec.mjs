// The `moe-quant` command line, run as a user would.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
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

test('usage errors exit with status 2 and suggest the closest command or flag', (t) => {
  t.is(cli('inspect').status, 2)
  t.is(cli().status, 2)
  const command = cli('quantise', 'x')
  t.is(command.status, 2)
  t.regex(command.stderr, /unknown command "quantise" \(did you mean quantize\?\); commands: inspect, quantize, eval\n\(moe-quant --help lists the options\)/)
  const flag = cli('inspect', 'x', '--jsn')
  t.is(flag.status, 2)
  t.regex(flag.stderr, /^moe-quant: unknown option --jsn \(did you mean --json\?\)\n\(moe-quant inspect --help lists the options\) \[E_OPTION_INVALID\]\n$/)
  const help = cli('--help')
  t.is(help.status, 0)
  t.regex(help.stdout, /moe-quant inspect DIR/)
})

test('--version, and help per command (COMMAND --help and help COMMAND)', (t) => {
  const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version
  for (const flag of ['--version', '-V']) t.is(cli(flag).stdout, `${version}\n`)
  for (const [command, option] of [['inspect', /--json/], ['quantize', /--max-shard-size SIZE/], ['eval', /--device DEVICE/]]) {
    const help = cli(command, '--help')
    t.is(help.status, 0, command)
    t.regex(help.stdout, new RegExp(`^Usage:\n  moe-quant ${command} `))
    t.regex(help.stdout, option)
    t.is(cli('help', command).stdout, help.stdout)
  }
})

test('a Hugging Face model id instead of a folder says to download it first', (t) => {
  for (const args of [['inspect', 'Qwen/Qwen3-30B-A3B'], ['quantize', 'Qwen/Qwen3-30B-A3B', '--format', 'fp8', '--out', join(tempDir(), 'o')]]) {
    const run = cli(...args)
    t.is(run.status, 2, args.join(' '))
    t.regex(run.stderr, /Qwen\/Qwen3-30B-A3B is not a folder here, and moe-quant downloads nothing: it looks like a Hugging Face model id/)
    t.regex(run.stderr, /huggingface-cli download Qwen\/Qwen3-30B-A3B --local-dir \.\/Qwen3-30B-A3B/)
  }
})

test('the demo quantizes and evaluates the example model without a warning', (t) => {
  const run = spawnSync(process.execPath, [join(ROOT, 'dist/cli/demo.js')], { encoding: 'utf8' })
  t.is(run.status, 0, run.stderr)
  t.regex(run.stdout, /^format {16}NVFP4$/m)
  t.regex(run.stdout, /KL mean/)
  t.notRegex(run.stderr, /warning/i)
  t.notRegex(run.stdout, /files not copied/)
})

test('the README examples for a source checkout run as written', (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const block = /These run as written\s+there, on the bundled example model:\n\n```sh\n([\s\S]*?)```/.exec(readme)
  t.truthy(block, 'the README block is where this test expects it')
  const commands = block[1].trim().split('\n')
  t.is(commands.length, 3)
  for (const command of commands) {
    t.true(command.startsWith('npx moe-quant '), command)
    // The first `npx moe-quant` in a checkout installs the checkout into npx's cache, and would run its
    // `prepare` (a full build, rewriting the addon other test files are loading at that moment): the build
    // is already done, so scripts are skipped.
    const env = { ...process.env, npm_config_ignore_scripts: 'true' }
    const run = spawnSync('sh', ['-c', command], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, env })
    t.is(run.status, 0, `${command}\n${run.stderr}`)
  }
})
