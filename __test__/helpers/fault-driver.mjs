// Runs inside a private mount namespace (`unshare -m`, started by faults.spec.mjs): mounts a small tmpfs,
// makes a CLI quantization into it fail, and prints one JSON line describing what happened. Mounts made here
// vanish with the namespace, so nothing outside it is touched.
//
// usage: node fault-driver.mjs '{"mode": "full"|"readonly"|"coverage", "dir": …, "size": "64k", "args": [CLI args]}'
//   full      the tmpfs is too small for the output: ENOSPC
//   coverage  quantizeModel() with `args` as its options, the coverage report going to the tmpfs, filled up
//   readonly  the tmpfs is remounted read-only as soon as the run's temporary directory appears (the run is
//             stopped with SIGSTOP meanwhile, so no file is open for writing), then remounted read-write
//             and the same command run again
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { readdirSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const MAIN = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url))
const { mode, dir, size, args } = JSON.parse(process.argv[2])
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
// `-t tmpfs … tmpfs`: util-linux's mount cannot remount by mount point alone in a user namespace.
const mount = (options) => execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir], { stdio: 'pipe' })
const list = () => readdirSync(dir).sort()
const report = {}

mount(`size=${size}`)
if (mode === 'full') {
  const run = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' })
  Object.assign(report, { status: run.status, signal: run.signal, stderr: run.stderr, after: list() })
} else if (mode === 'coverage') {
  try {
    writeFileSync(`${dir}/filler`, Buffer.alloc(1 << 20))
  } catch {} // ENOSPC once full
  const { quantizeModel } = await import('../../dist/index.js')
  const error = await quantizeModel(args).then(() => null, (e) => e)
  Object.assign(report, { code: error?.code, message: error?.message, after: list() })
} else {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (chunk) => (stderr += chunk))
  const closed = new Promise((resolve) => child.on('close', (status, signal) => resolve({ status, signal })))
  let exited = false
  closed.then(() => (exited = true))
  const deadline = Date.now() + 60_000
  while (!exited && Date.now() < deadline && !list().some((f) => f.includes('.moe-quant-tmp-'))) await sleep(2)
  report.sawTmp = !exited && list().some((f) => f.includes('.moe-quant-tmp-'))
  if (report.sawTmp) {
    // A read-only remount fails (EBUSY) while a file is open for writing: retry between short runs.
    for (let attempt = 0; attempt < 200 && !report.remounted; attempt++) {
      child.kill('SIGSTOP')
      try {
        mount('remount,ro')
        report.remounted = true
      } catch {
        child.kill('SIGCONT')
        await sleep(5)
      }
    }
    child.kill('SIGCONT')
  }
  Object.assign(report, await closed, { stderr, after: list() })
  mount('remount,rw')
  const again = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' })
  Object.assign(report, { againStatus: again.status, againStderr: again.stderr, afterAgain: list() })
}
process.stdout.write(`${JSON.stringify(report)}\n`)
