// Faults while the CLI writes its output: a file-size limit, a full disk, a file system turning read-only
// mid-export, and `kill -9` mid-export. In every case: exit status 1 with the error code (or death by the
// signal), no partial output directory, the temporary directory removed (or removed by the next run), and
// the input byte-for-byte unchanged. The writer-level cases (each file-system operation failing in turn)
// are in crates/core/tests/faults.rs.
//
// The full-disk and read-only cases mount a small tmpfs in a private mount namespace (`unshare -m` as root,
// `unshare -rm` through a user namespace otherwise); where neither is allowed they are skipped.
import test from 'ava'
import { createHash } from 'node:crypto'
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'

import { ROOT, copyFixture, tempDir } from './helpers/checkpoint.mjs'

const MAIN = join(ROOT, 'dist/cli/main.js')
const DRIVER = join(ROOT, '__test__/helpers/fault-driver.mjs')
const TMP = /^\.out\.moe-quant-tmp-\d+\.\d+$/

/** `moe-quant quantize MODEL --out OUT` with a small calibration and no coverage report. */
const quantizeArgs = (model, out, samples = 4, seqLen = 16) =>
  ['quantize', model, '--format', 'nvfp4', '--out', out, '--samples', String(samples), '--seq-len', String(seqLen), '--no-coverage']

/** SHA-256 of every file of `dir`, by name. */
function hashes(dir) {
  return Object.fromEntries(readdirSync(dir).sort().map((f) => [f, createHash('sha256').update(readFileSync(join(dir, f))).digest('hex')]))
}

/** A copy of the qwen3_moe/hub fixture (the input) with its hashes, and an empty directory for the output. */
function setup() {
  const model = copyFixture('qwen3_moe/hub')
  const parent = join(tempDir(), 'output')
  mkdirSync(parent)
  return { model, before: hashes(model), parent, out: join(parent, 'out') }
}

// ---- a file-size limit ----------------------------------------------------------------------------------

test.serial('CLI: a file-size limit the output cannot fit in exits with E_OUTPUT_WRITE and leaves nothing', (t) => {
  const { model, before, parent, out } = setup()
  // 64 KiB (bash counts 1024-byte blocks): config.json and the tokenizer fit, the 190 KB shard does not.
  const run = spawnSync('bash', ['-c', 'ulimit -f 64 && exec "$@"', 'bash', process.execPath, MAIN, ...quantizeArgs(model, out)], { encoding: 'utf8' })
  t.is(run.signal, null, 'not killed by SIGXFSZ')
  t.is(run.status, 1, run.stderr)
  const tmp = join(parent, '.out.moe-quant-tmp-').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  // The shard is laid out at its full size before calibration starts, so the limit can be hit before any
  // progress line.
  t.regex(run.stderr, new RegExp(`(^|\\n)moe-quant: ${tmp}\\d+\\.\\d+/shard-0: cannot write the output \\(a file-size limit was reached\\): .* \\[E_OUTPUT_WRITE\\]\\n$`))
  t.deepEqual(readdirSync(parent), [], 'no output directory, no temporary directory')
  t.deepEqual(hashes(model), before, 'the input is untouched')
})

// ---- kill -9 ----------------------------------------------------------------------------------------------

/**
 * Starts a quantization and SIGKILLs it as soon as its temporary directory appears in `parent` (polled every
 * 2 ms). Returns the temporary directory's name, or null if the run ended first.
 */
async function killMidExport(args, parent) {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: 'ignore' })
  const closed = new Promise((resolve) => child.on('close', (status, signal) => resolve({ status, signal })))
  let exited = false
  closed.then(() => (exited = true))
  const deadline = Date.now() + 60_000
  let seen
  while (!exited && Date.now() < deadline && !(seen = readdirSync(parent).find((f) => TMP.test(f)))) {
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
  if (seen && !exited) child.kill('SIGKILL')
  const { signal } = await closed
  return signal === 'SIGKILL' ? seen : null
}

test.serial('CLI: kill -9 mid-export leaves only the temporary directory, which the next run removes', async (t) => {
  const { model, before, parent, out } = setup()
  // The temporary directory exists from the start of calibration to the end of the export: about a second
  // with 64 sequences of 256 tokens. Should the run still end before it is seen (a very fast machine), the
  // calibration is doubled (128 × 256 tokens still fit in the bundled calibration text).
  let stale = null
  for (const samples of [64, 128, 128]) {
    stale = await killMidExport(quantizeArgs(model, out, samples, 256), parent)
    if (stale) break
    t.log(`the run with ${samples} samples ended before it could be killed; retrying`)
    rmSync(out, { recursive: true, force: true })
  }
  t.truthy(stale, 'a run was killed mid-export')
  t.deepEqual(readdirSync(parent), [stale], 'no output directory; the temporary directory of the killed run is left')

  const again = spawnSync(process.execPath, [MAIN, ...quantizeArgs(model, out)], { encoding: 'utf8' })
  t.is(again.status, 0, again.stderr)
  t.deepEqual(readdirSync(parent), ['out'], 'the next run removed the stale temporary directory')
  t.true(readdirSync(out).includes('model.safetensors'))
  t.deepEqual(hashes(model), before, 'the input is untouched')
})

// ---- a full disk and a read-only file system (tmpfs in a private mount namespace) -------------------------

/** `unshare` arguments giving a mount namespace where a tmpfs can be mounted, or null. */
function mountNamespace() {
  const probe = tempDir()
  for (const args of [['-m', '--propagation', 'private'], ['-r', '-m', '--propagation', 'private']]) {
    const run = spawnSync('unshare', [...args, 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs "$0" && echo MOUNTED', probe], { encoding: 'utf8' })
    if (run.stdout?.includes('MOUNTED')) return args
  }
  return null
}

const NAMESPACE = mountNamespace()
const mounting = NAMESPACE ? test.serial : test.skip
const mountNote = NAMESPACE ? '' : ' (skipped: no tmpfs can be mounted in a private mount namespace here)'

/** Runs the fault driver in a private mount namespace; returns its report. */
function drive(task) {
  const run = spawnSync('unshare', [...NAMESPACE, process.execPath, DRIVER, JSON.stringify(task)], { encoding: 'utf8' })
  if (run.status !== 0) throw new Error(`the fault driver failed (${run.status}): ${run.stderr}`)
  return JSON.parse(run.stdout)
}

mounting(`CLI: a full disk exits with E_OUTPUT_WRITE and leaves nothing${mountNote}`, (t) => {
  const { model, before, parent, out } = setup()
  // 64 KiB of tmpfs: config.json and the tokenizer fit, the 190 KB shard does not.
  const report = drive({ mode: 'full', dir: parent, size: '64k', args: quantizeArgs(model, out) })
  t.is(report.status, 1, report.stderr)
  t.regex(report.stderr, /(^|\n)moe-quant: \S+\/\.out\.moe-quant-tmp-\d+\.\d+\/\S+: cannot write the output \(the disk is full\): .* \[E_OUTPUT_WRITE\]\n$/)
  t.true(report.stderr.includes(parent), report.stderr)
  t.deepEqual(report.after, [], 'no output directory, no temporary directory')
  t.deepEqual(hashes(model), before, 'the input is untouched')
})

mounting(`CLI: a file system turning read-only mid-export exits with E_OUTPUT_WRITE; the next run cleans up${mountNote}`, (t) => {
  const { model, before, parent, out } = setup()
  const report = drive({ mode: 'readonly', dir: parent, size: '16m', args: quantizeArgs(model, out, 64, 256) })
  t.true(report.sawTmp && report.remounted, JSON.stringify(report))
  t.is(report.status, 1, report.stderr)
  t.regex(report.stderr, /(^|\n)moe-quant: \S+\/\.out\.moe-quant-tmp-\d+\.\d+\/\S+: cannot write the output \(the filesystem is read-only\): .* \[E_OUTPUT_WRITE\]\n$/)
  // Nothing can be removed from a read-only file system: only the temporary directory is left …
  t.is(report.after.length, 1, JSON.stringify(report.after))
  t.regex(report.after[0], TMP)
  // … until the next run for the same output, once the file system is writable again.
  t.is(report.againStatus, 0, report.againStderr)
  t.deepEqual(report.afterAgain, ['out'])
  t.deepEqual(hashes(model), before, 'the input is untouched')
})

mounting(`API: a coverage report that does not fit is E_OUTPUT_WRITE and leaves no temporary file${mountNote}`, (t) => {
  const { model, before, parent, out } = setup()
  const disk = join(tempDir(), 'disk')
  mkdirSync(disk)
  const coverageReport = join(disk, 'coverage.html')
  const calibration = { ids: [[1, 5, 9, 13, 17, 21, 25, 29]], samples: 1, seqLen: 8 }
  const options = { model, output: out, format: 'fp8', calibration, coverageReport }
  const report = drive({ mode: 'coverage', dir: disk, size: '8k', args: options })
  t.is(report.code, 'E_OUTPUT_WRITE', report.message)
  t.true(report.message.startsWith(`${coverageReport}: cannot write the coverage report (the disk is full): `), report.message)
  t.deepEqual(report.after, ['filler'], 'no temporary file left')
  // The checkpoint itself was complete before the report was written.
  t.deepEqual(readdirSync(parent), ['out'])
  t.deepEqual(hashes(model), before, 'the input is untouched')
})
