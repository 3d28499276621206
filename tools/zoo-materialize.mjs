#!/usr/bin/env node
// Writes one MoE zoo checkpoint (fixtures/zoo/, see tools/make_zoo.py) into a directory, exactly as the tests
// materialize it: config.json and a model.safetensors with deterministic pseudo-random values.
//
//   node tools/zoo-materialize.mjs MODEL_TYPE LAYOUT OUT_DIR
import { cpSync, rmSync } from 'node:fs'

import { materializeZoo, removeZooCheckpoint } from '../__test__/helpers/zoo.mjs'

const [modelType, layout, out] = process.argv.slice(2)
if (!modelType || !layout || !out) {
  console.error('usage: node tools/zoo-materialize.mjs MODEL_TYPE LAYOUT OUT_DIR')
  process.exit(2)
}
const dir = materializeZoo(modelType, layout)
rmSync(out, { recursive: true, force: true })
cpSync(dir, out, { recursive: true })
removeZooCheckpoint(dir)
