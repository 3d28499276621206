#!/usr/bin/env node
// Run by `npm run build:native` after `napi build`: points the generated loader (index.js) at the
// `@moe-quant/` platform packages.
//
// napi-rs 3 names a platform package `${napi.packageName}-${platformArchABI}` and has no setting for a
// scope of its own (napi.packageName "@moe-quant/moe-quant" would give "@moe-quant/moe-quant-linux-x64-gnu"),
// while moe-quant publishes its addons as `@moe-quant/<platformArchABI>` (`@moe-quant/linux-x64-gnu`, and
// `@moe-quant/linux-x64-gnu-cuda`, which ts/native/loader.ts loads). So every `'moe-quant-<platformArchABI>'` the
// loader requires becomes `'@moe-quant/<platformArchABI>'`. The local `./moe-quant.<platformArchABI>.node`
// of a source build is left alone, and stays the loader's first choice.
//
// Idempotent. Fails when it finds neither form, i.e. when napi-rs changes what it generates.
import { readFileSync, writeFileSync } from 'node:fs'

const file = process.argv[2] ?? 'index.js'
const source = readFileSync(file, 'utf8')
const unscoped = /'moe-quant-(?=[a-z0-9]+-[a-z0-9])/g
const count = (source.match(unscoped) ?? []).length
if (count === 0) {
  if (!source.includes("require('@moe-quant/linux-x64-gnu')")) {
    console.error(`${file}: no platform package require found (napi-rs changed its loader?); expected 'moe-quant-linux-x64-gnu'`)
    process.exit(1)
  }
} else {
  writeFileSync(file, source.replace(unscoped, "'@moe-quant/"))
  console.log(`${file}: ${count} platform package names moved to the @moe-quant/ scope`)
}
