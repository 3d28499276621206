// Install without Rust: the packed moe-quant and @moe-quant/linux-x64-gnu tarballs install offline into a
// fresh project outside the repository, with no cargo or rustc on PATH, and run from there (API and CLI) on
// the addon of the platform package. Builds nothing: it packs the addon and dist/ that `npm run build` left,
// with tools/pack-platform.mjs (what `npm run pack:packages` runs).
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { delimiter, dirname, join } from 'node:path'

import { FIXTURES, ROOT, tempDir } from './helpers/checkpoint.mjs'

const PLATFORM = '@moe-quant/linux-x64-gnu'
const ADDON = 'moe-quant.linux-x64-gnu.node'
const VERSION = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version
const MODEL = join(FIXTURES, 'qwen3_moe', 'hub')

/** The parent's environment without npm's, napi-rs's and Rust's variables, and PATH without Rust or the repo. */
function freshEnv() {
  const env = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(npm_|NAPI_RS_|CARGO|RUSTUP|RUSTC|INIT_CWD$)/i.test(key)) env[key] = value
  }
  const rust = (dir) => ['cargo', 'rustc', 'rustup'].some((tool) => existsSync(join(dir, tool)))
  const inRepo = (dir) => dir === ROOT || dir.startsWith(ROOT + '/')
  const path = (process.env.PATH ?? '').split(delimiter).filter((dir) => dir && !rust(dir) && !inRepo(dir))
  const nodeDir = dirname(process.execPath)
  if (!path.includes(nodeDir)) path.unshift(nodeDir)
  env.PATH = path.join(delimiter)
  env.npm_config_update_notifier = 'false'
  return env
}

/** Runs a command, failing the test with its output unless it exits 0; returns its stdout. */
function run(t, command, args, options) {
  const result = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 64 * 2 ** 20, ...options })
  if (result.status !== 0) {
    t.fail(`${command} ${args.join(' ')} exited ${result.status ?? result.signal}:\n${result.stderr}\n${result.stdout}\n${result.error ?? ''}`)
    throw new Error(`${command} failed`)
  }
  return result
}

// Imports moe-quant as a user would, quantizes, asks for CUDA, and reports which addon files are mapped.
const USER_SCRIPT = `
import { quantizeModel } from 'moe-quant'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

const [model, output] = process.argv.slice(2)
const calibration = { ids: [[1, 5, 9, 13, 17, 21, 25, 29], [2, 4, 6, 8, 10, 12, 14, 16]], samples: 2, seqLen: 8 }
const result = await quantizeModel({ model, output, format: 'nvfp4', calibration, coverageReport: false })
let cuda = null
try {
  await quantizeModel({ model, output: output + '-cuda', format: 'nvfp4', calibration, coverageReport: false, device: 'cuda' })
} catch (error) {
  cuda = { code: error.code, message: error.message }
}
const addons = readFileSync('/proc/self/maps', 'utf8').split('\\n').map((line) => line.trim().split(/\\s+/)[5]).filter((p) => p?.endsWith('.node'))
const require = createRequire(import.meta.url)
console.log(JSON.stringify({
  output: result.output,
  quantizedTensors: result.quantizedTensors,
  addons: [...new Set(addons)],
  resolved: require.resolve('${PLATFORM}'),
  cuda,
}))
`

const linuxX64 = process.platform === 'linux' && process.arch === 'x64'

;(linuxX64 ? test : test.skip)('the packed packages install offline without Rust and run on the platform package\'s addon', (t) => {
  const work = tempDir('moe-quant-pack-')
  t.teardown(() => rmSync(work, { recursive: true, force: true }))
  const tarballs = join(work, 'tarballs')
  const project = join(work, 'project')
  const env = freshEnv()

  // Pack moe-quant and the CPU platform package (the tool checks the tarballs' contents too).
  run(t, process.execPath, [join(ROOT, 'tools', 'pack-platform.mjs'), '--pack', tarballs, '--only', PLATFORM], { cwd: ROOT, env })
  const main = join(tarballs, `moe-quant-${VERSION}.tgz`)
  const platform = join(tarballs, `moe-quant-linux-x64-gnu-${VERSION}.tgz`)
  t.deepEqual(readdirSync(tarballs).sort(), [main, platform].map((f) => f.slice(tarballs.length + 1)).sort())
  const listing = run(t, 'tar', ['tzf', main], { env }).stdout.split('\n')
  t.false(listing.some((f) => f.endsWith('.node')), 'no addon in the moe-quant tarball')
  t.true(run(t, 'tar', ['tzf', platform], { env }).stdout.split('\n').includes(`package/${ADDON}`))

  // A fresh project outside the repository, no Rust anywhere on PATH.
  const which = spawnSync('sh', ['-c', 'command -v cargo || command -v rustc'], { env, encoding: 'utf8' })
  t.not(which.status, 0, `cargo/rustc found on the stripped PATH: ${which.stdout}`)
  mkdirSync(project)
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'fresh-project', version: '1.0.0', private: true }))
  // --offline with an empty cache: the install fails if npm needs the registry for anything, which also
  // proves moe-quant has no runtime dependencies and that the explicit platform tarball satisfies its
  // (unpublished) optional dependency.
  const install = run(t, 'npm', ['install', '--offline', '--cache', join(work, 'npm-cache'), '--no-audit', '--no-fund', main, platform], { cwd: project, env })
  t.false(/install.?scripts/i.test(install.stderr), `npm reported install scripts:\n${install.stderr}`)

  const installed = join(project, 'node_modules')
  const manifest = JSON.parse(readFileSync(join(installed, 'moe-quant', 'package.json'), 'utf8'))
  t.is(manifest.scripts, undefined, 'the published manifest has no scripts (npm never runs prepare for it)')
  t.deepEqual(manifest.optionalDependencies, { [PLATFORM]: VERSION })
  t.false(readdirSync(join(installed, 'moe-quant')).some((f) => f.endsWith('.node')))
  t.true(existsSync(join(installed, PLATFORM, ADDON)))

  // The API, from the fresh project.
  writeFileSync(join(project, 'use.mjs'), USER_SCRIPT)
  const output = join(work, 'nvfp4')
  const report = JSON.parse(run(t, process.execPath, ['use.mjs', MODEL, output], { cwd: project, env }).stdout)
  const expected = realpathSync(join(installed, PLATFORM, ADDON))
  t.deepEqual(report.addons, [expected], 'the only addon loaded is the platform package\'s')
  t.is(realpathSync(report.resolved), expected)
  t.is(report.output, output)
  t.is(report.quantizedTensors, 56)
  const hfQuant = JSON.parse(readFileSync(join(output, 'hf_quant_config.json'), 'utf8'))
  t.is(hfQuant.quantization.quant_algo, 'NVFP4')
  t.true(existsSync(join(output, 'model.safetensors')))
  t.is(report.cuda?.code, 'E_DEVICE_UNAVAILABLE')
  t.true(report.cuda.message.includes('npm install @moe-quant/linux-x64-gnu-cuda'), report.cuda.message)

  // The CLI through its bin link: inspect, and quantize with the calibration text bundled in the package.
  const bin = join(installed, '.bin', 'moe-quant')
  const inspect = JSON.parse(run(t, bin, ['inspect', MODEL, '--json'], { cwd: project, env }).stdout)
  t.is(inspect.modelType, 'qwen3_moe')
  t.is(inspect.moeLayers.length, 2)
  const fp8 = join(work, 'fp8')
  run(t, bin, ['quantize', MODEL, '--format', 'fp8', '--out', fp8, '--samples', '4', '--seq-len', '32', '--no-coverage', '--json'], { cwd: project, env })
  t.is(JSON.parse(readFileSync(join(fp8, 'hf_quant_config.json'), 'utf8')).quantization.quant_algo, 'FP8')
})
