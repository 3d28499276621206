#!/usr/bin/env node
// Puts the built native addons into the per-platform packages under npm/ and, with --pack, packs them and
// moe-quant itself. Builds nothing: run `npm run build` (and `npm run build:cuda` for the CUDA package) first.
//
//   node tools/pack-platform.mjs              # npm run artifacts: copy the addons into npm/*/, check versions
//   node tools/pack-platform.mjs --pack DIR   # npm run pack:packages: …then npm pack everything into DIR
//   … --only @moe-quant/linux-x64-gnu          # only the named platform package(s) (moe-quant is always packed)
//
// Each npm/<dir>/package.json names its addon in `main`; the addon is copied from the repository root, where
// `npm run build:native` (moe-quant.linux-x64-gnu.node) and `npm run build:cuda`
// (moe-quant.linux-x64-gnu.cuda.node) leave it. A package listed in moe-quant's `platformPackages` (the CPU
// addon) must have its addon; it becomes an optional dependency, at exactly moe-quant's version, of the packed
// moe-quant only (a source checkout does not list it, so its lock file stays installable with `npm ci` while
// the package is not on the registry). Others (the CUDA addon, installed explicitly by users) are skipped when
// their addon has not been built. The copies are git-ignored.
//
// Checks: every package's version equals moe-quant's, platformPackages name
// packages under npm/, the CUDA package's peer dependency on moe-quant is that version; with --pack, moe-quant's
// tarball holds dist/, the loader and the CLI but no .node file, and each platform tarball holds its addon.
// The packs run with --ignore-scripts: moe-quant's `prepare` would rebuild everything. Publish the tarballs
// (platform packages first), not the directories: `npm publish` in the repository is refused (prepublishOnly).
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const readJson = (file) => JSON.parse(readFileSync(file, 'utf8'))

function fail(message) {
  console.error(`pack-platform: ${message}`)
  process.exit(1)
}

const args = process.argv.slice(2)
const packIndex = args.indexOf('--pack')
const packDir = packIndex >= 0 ? args[packIndex + 1] : undefined
if (packIndex >= 0 && !packDir) fail('--pack needs a destination directory')
const only = args.flatMap((arg, i) => (args[i - 1] === '--only' ? [arg] : []))

const main = readJson(join(ROOT, 'package.json'))
if (main.optionalDependencies) fail('list platform packages in "platformPackages"; the packed manifest gets optionalDependencies')
const optional = Object.fromEntries((main.platformPackages ?? []).map((name) => [name, main.version]))
const packages = readdirSync(join(ROOT, 'npm'), { withFileTypes: true })
  .filter((entry) => entry.isDirectory() && existsSync(join(ROOT, 'npm', entry.name, 'package.json')))
  .map((entry) => {
    const dir = join(ROOT, 'npm', entry.name)
    const manifest = readJson(join(dir, 'package.json'))
    return { dir, manifest, addon: manifest.main, required: manifest.name in optional }
  })

// Versions and names.
const problems = []
for (const { dir, manifest, addon } of packages) {
  if (manifest.version !== main.version) problems.push(`${manifest.name} is version ${manifest.version}, moe-quant ${main.version}`)
  if (!addon?.endsWith('.node') || !manifest.files?.includes(addon)) problems.push(`${dir}/package.json: main must be the .node file, listed in files`)
  const peer = manifest.peerDependencies?.['moe-quant']
  if (peer !== undefined && peer !== main.version) problems.push(`${manifest.name} peer-depends on moe-quant ${peer}, not ${main.version}`)
}
for (const [name, version] of Object.entries(optional)) {
  if (version !== main.version) problems.push(`platformPackages: ${name} is ${version}, not exactly ${main.version}`)
  if (!packages.some((p) => p.manifest.name === name)) problems.push(`platformPackages: ${name} has no package under npm/`)
}
if (Object.keys(main.dependencies ?? {}).length > 0) problems.push('moe-quant must have no runtime dependencies (the install test installs offline)')
for (const name of only) if (!packages.some((p) => p.manifest.name === name)) problems.push(`--only ${name}: no such package under npm/`)
if (problems.length > 0) fail(problems.join('\n'))

// Addons.
const ready = []
for (const pkg of packages.filter((p) => only.length === 0 || only.includes(p.manifest.name))) {
  const source = join(ROOT, pkg.addon)
  const target = join(pkg.dir, pkg.addon)
  if (existsSync(source)) {
    copyFileSync(source, target)
    console.log(`${pkg.manifest.name}: ${pkg.addon} (${(statSync(target).size / 2 ** 20).toFixed(1)} MiB)`)
    ready.push(pkg)
  } else if (pkg.required) {
    fail(`${pkg.addon} is not built: run npm run build:native first`)
  } else {
    console.log(`${pkg.manifest.name}: skipped, ${pkg.addon} is not built (npm run build:cuda)`)
  }
}
if (!packDir) process.exit(0)

// Tarballs.
for (const file of ['dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js']) {
  if (!existsSync(join(ROOT, file))) fail(`${file} is missing: run npm run build:ts first`)
}
const destination = resolve(packDir)
mkdirSync(destination, { recursive: true })

function npm(cwd, args) {
  const result = spawnSync('npm', [...args, '--ignore-scripts', '--json'], { cwd, encoding: 'utf8' })
  if (result.status !== 0) fail(`npm ${args.join(' ')} in ${cwd} failed:\n${result.stderr}`)
  const [info] = JSON.parse(result.stdout)
  return info
}

function pack(cwd) {
  const info = npm(cwd, ['pack', '--pack-destination', destination])
  return { file: join(destination, info.filename), files: info.files.map((f) => f.path), size: info.size }
}

// moe-quant is packed from a staging copy of what `files` selects, with a published manifest that lists the
// platform packages as optional dependencies and has no scripts: npm never runs a dependency's `prepare` (it builds a source checkout), but it still lists it as an
// install script, warns about it on every install and refuses it under --strict-allow-scripts.
const staging = mkdtempSync(join(tmpdir(), 'moe-quant-stage-'))
let mainPack
try {
  for (const { path } of npm(ROOT, ['pack', '--dry-run']).files) {
    mkdirSync(dirname(join(staging, path)), { recursive: true })
    copyFileSync(join(ROOT, path), join(staging, path))
  }
  const { scripts, devDependencies, ava, platformPackages, ...rest } = main
  const published = { ...rest, optionalDependencies: optional }
  writeFileSync(join(staging, 'package.json'), `${JSON.stringify(published, null, 2)}\n`)
  mainPack = pack(staging)
} finally {
  rmSync(staging, { recursive: true, force: true })
}
const addons = mainPack.files.filter((f) => f.endsWith('.node'))
if (addons.length > 0) fail(`the moe-quant tarball must not contain native addons (they live in npm/*): ${addons.join(', ')}`)
for (const file of ['index.js', 'index.d.ts', 'dist/index.js', 'dist/cli/main.js', 'examples/calibration.jsonl']) {
  if (!mainPack.files.includes(file)) fail(`the moe-quant tarball lacks ${file}`)
}
const tarballs = [mainPack]
for (const pkg of ready) {
  const packed = pack(pkg.dir)
  if (!packed.files.includes(pkg.addon)) fail(`${packed.file} lacks ${pkg.addon}`)
  tarballs.push(packed)
}
for (const { file, size } of tarballs) console.log(`${file} (${(size / 2 ** 20).toFixed(1)} MiB)`)
