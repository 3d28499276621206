#!/usr/bin/env node
// How moe-quant's detection handles every model of the MoE zoo (fixtures/zoo/, made by tools/make_zoo.py).
//
//   node tools/zoo-report.mjs [checkout] [--only type,type] [--json file]
//
// For every built zoo entry and layout (hub, and fused when it differs), materializes a checkpoint in a
// temporary directory, runs inspectModel() from <checkout>/dist/index.js (default: this checkout; it must be
// built) and compares the report with the zoo's ground truth: MoE layer indices, expert count, top-k, H, I,
// layout kind, shared experts, router and routed-expert tensor names, and records which formats inspect says
// the checkpoint takes. Prints a markdown table, one row per entry and layout:
//   ok                      everything matches
//   wrong: <what>           a report that differs from the truth
//   refused: <code> <msg>   inspectModel threw a MoeQuantError (message cut to 100 characters)
//   crash: <name> <msg>     inspectModel threw something else (a bug: every failure should carry a code)
// and the totals. --json writes the rows as JSON too.
import { existsSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

import { compareWithTruth, loadZooEntry, materializeZoo, removeZooCheckpoint, zooCases, zooIndex } from '../__test__/helpers/zoo.mjs'

const here = resolve(fileURLToPath(import.meta.url), '..', '..')

function parseArgs(argv) {
  const args = { root: here, only: null, json: null }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--only') args.only = new Set(argv[++i].split(','))
    else if (arg === '--json') args.json = argv[++i]
    else if (arg === '--help' || arg === '-h') {
      console.log('usage: node tools/zoo-report.mjs [checkout] [--only type,type] [--json file]')
      process.exit(0)
    } else args.root = resolve(arg)
  }
  return args
}

const cell = (text) => String(text).replace(/\|/g, '\\|').replace(/\s+/g, ' ')

/** One row: inspect a materialized checkpoint and judge the result. */
async function judge(pkg, modelType, layout) {
  const entry = loadZooEntry(modelType)
  const dir = materializeZoo(modelType, layout)
  try {
    let report
    try {
      report = await pkg.inspectModel(dir)
    } catch (error) {
      if (error instanceof pkg.MoeQuantError && typeof error.code === 'string') {
        return { result: 'refused', code: error.code, detail: error.message.slice(0, 100) }
      }
      return { result: 'crash', code: error?.name ?? typeof error, detail: String(error?.message ?? error).slice(0, 100) }
    }
    const problems = compareWithTruth(report, entry, layout, pkg.expertTensorNames)
    const formats = Object.fromEntries((report.formats ?? []).map((f) => [f.format, f.support]))
    return problems.length === 0
      ? { result: 'ok', family: report.family, architecture: report.architecture, formats }
      : { result: 'wrong', detail: problems.join('; '), family: report.family, architecture: report.architecture, formats }
  } finally {
    removeZooCheckpoint(dir)
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2))
  const entryPoint = join(args.root, 'dist', 'index.js')
  if (!existsSync(entryPoint)) {
    console.error(`${entryPoint} does not exist: build that checkout first (npm run build), or name a built checkout`)
    process.exit(2)
  }
  const pkg = await import(pathToFileURL(entryPoint).href)
  const rows = []
  for (const { modelType, layout } of zooCases()) {
    if (args.only && !args.only.has(modelType)) continue
    rows.push({ modelType, layout, ...(await judge(pkg, modelType, layout)) })
  }

  console.log(`MoE zoo against ${entryPoint}\n`)
  console.log('| model type | layout | result |')
  console.log('|---|---|---|')
  for (const row of rows) {
    const text =
      row.result === 'ok' ? `ok (${row.architecture})`
      : row.result === 'wrong' ? `wrong: ${row.detail}`
      : `${row.result}: ${row.code} ${row.detail}`
    console.log(`| \`${row.modelType}\` | ${row.layout} | ${cell(text)} |`)
  }
  const totals = {}
  for (const row of rows) {
    totals[row.result] ??= { all: 0, hub: 0, fused: 0 }
    totals[row.result].all++
    totals[row.result][row.layout]++
  }
  const types = new Set(rows.map((r) => r.modelType))
  const okTypes = [...types].filter((t) => rows.filter((r) => r.modelType === t).every((r) => r.result === 'ok'))
  console.log(`\n${rows.length} checkpoints (${types.size} model types; ${rows.filter((r) => r.layout === 'fused').length} with a distinct fused layout)`)
  for (const result of ['ok', 'wrong', 'refused', 'crash']) {
    const t = totals[result] ?? { all: 0, hub: 0, fused: 0 }
    console.log(`- ${result}: ${t.all} (hub ${t.hub}, fused ${t.fused})`)
  }
  console.log(`- model types ok in every layout: ${okTypes.length}`)
  // What inspect says each detected checkpoint can take (the same plan quantizeModel would build).
  const takes = (format, support) => rows.filter((r) => r.result === 'ok' && r.formats?.[format] === support)
  const typesOf = (list) => new Set(list.map((r) => r.modelType)).size
  for (const [format, support] of [['w4a16_nvfp4', 'weight_only'], ['fp8_pc_pt', 'weight_only'], ['fp8', 'calibrated'], ['nvfp4', 'calibrated']]) {
    const list = takes(format, support)
    console.log(`- ${format} ${support.replace('_', '-')}: ${list.length} checkpoints, ${typesOf(list)} model types`)
  }
  const index = zooIndex()
  const notBuilt = Object.entries(index).filter(([, v]) => v.status !== 'built')
  console.log(`- not in the table (INDEX.json): ${notBuilt.map(([k, v]) => `${k} (${v.status})`).join(', ')}`)
  if (args.json) writeFileSync(args.json, `${JSON.stringify(rows, null, 2)}\n`)
}

await main()
