// What a run writes besides the checkpoint: the expert-coverage report (inside the output by default,
// published with it; a user path is checked against the input and against overwrite before any work) and
// the run record, and the report's rendering at 256 experts.
import test from 'ava'
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { calibrateModel, quantizeModel } from '../dist/index.js'
import { renderCoverageReport, sparseExperts } from '../dist/report/coverage.js'
import { copyFixture, tempDir } from './helpers/checkpoint.mjs'

const calibration = { ids: [[1, 5, 9, 13, 17, 21, 25, 29]], samples: 1, seqLen: 8 }

test('a coverage report path inside the input is refused before any work, also through a link', async (t) => {
  const model = copyFixture('qwen3_moe/hub')
  const config = readFileSync(join(model, 'config.json'))
  const link = join(tempDir(), 'link')
  symlinkSync(model, link)
  for (const coverageReport of [join(model, 'config.json'), join(model, 'report.html'), join(link, 'config.json')]) {
    const parent = tempDir()
    const options = { model, output: join(parent, 'out'), format: 'fp8', calibration, coverageReport, overwrite: true }
    const error = await t.throwsAsync(quantizeModel(options))
    t.is(error.code, 'E_OUTPUT_INVALID', error.message)
    t.true(error.message.includes('inside the input model directory'), error.message)
    t.deepEqual(readdirSync(parent), [], 'no work was done')
    const calibrated = await t.throwsAsync(calibrateModel({ model, calibration, coverageReport, overwrite: true }))
    t.is(calibrated.code, 'E_OUTPUT_INVALID')
  }
  t.deepEqual(readFileSync(join(model, 'config.json')), config)
  t.deepEqual(readdirSync(model).sort(), ['config.json', 'generation_config.json', 'model.safetensors', 'reference.safetensors', 'tokenizer.json', 'tokenizer_config.json'])
})

test('an existing coverage report is replaced only with overwrite; a directory is refused', async (t) => {
  const model = copyFixture('qwen3_moe/hub')
  const parent = tempDir()
  const coverageReport = join(parent, 'coverage.html')
  writeFileSync(coverageReport, 'mine')
  const options = { model, output: join(parent, 'out'), format: 'fp8', calibration, coverageReport }
  const error = await t.throwsAsync(quantizeModel(options))
  t.is(error.code, 'E_OUTPUT_INVALID')
  t.true(error.message.includes('exists; pass overwrite'), error.message)
  t.is(readFileSync(coverageReport, 'utf8'), 'mine')
  t.deepEqual(readdirSync(parent), ['coverage.html'])
  const calibrated = await t.throwsAsync(calibrateModel({ model, calibration, coverageReport }))
  t.is(calibrated.code, 'E_OUTPUT_INVALID')

  const result = await quantizeModel({ ...options, overwrite: true })
  t.is(result.coverageReportPath, coverageReport)
  t.true(readFileSync(coverageReport, 'utf8').includes('Expert coverage'))
  t.false(readdirSync(result.output).includes('moe-quant-coverage.html'), 'a report given a path is not also in the output')

  mkdirSync(join(parent, 'dir'))
  const directory = await t.throwsAsync(calibrateModel({ model, calibration, coverageReport: join(parent, 'dir'), overwrite: true }))
  t.is(directory.code, 'E_OUTPUT_INVALID')
  t.true(directory.message.includes('is a directory'))
})

test('the default report and the run record are published inside the output, with the checkpoint', async (t) => {
  const model = copyFixture('qwen3_moe/hub')
  const parent = tempDir()
  const output = join(parent, 'out')
  const result = await quantizeModel({ model, output, format: 'nvfp4', calibration: { ...calibration, batchSize: 1 }, exclude: ['model.layers.1.*'] })
  t.deepEqual(readdirSync(parent), ['out'], 'nothing beside the output')
  t.is(result.coverageReportPath, join(output, 'moe-quant-coverage.html'))
  t.is(result.runRecordPath, join(output, 'moe-quant-run.json'))
  const record = JSON.parse(readFileSync(result.runRecordPath, 'utf8'))
  const version = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version
  t.deepEqual(record.tool, { name: 'moe-quant', version })
  t.is(record.format, 'nvfp4')
  t.is(record.input, model)
  t.deepEqual(record.options, {
    device: 'cpu',
    exclude: ['model.layers.1.*'],
    indivisible: 'error',
    scope: 'all',
    recipe: null,
    kvCache: 'fp8_cast',
    exportFormat: 'modelopt',
    maxShardBytes: 5e9,
    calibration: { source: 'ids', samples: 1, seqLen: 8, batchSize: 1, allExperts: false },
  })
  t.deepEqual(record.calibration, {
    samples: 1,
    requestedSamples: 1,
    seqLen: 8,
    tokensPerLayer: 8,
    uncalibratedExperts: result.uncalibratedExperts,
  })
  t.deepEqual(record.warnings, result.warnings)
  t.deepEqual(record.skippedFiles, ['reference.safetensors'])
  t.false(Number.isNaN(Date.parse(record.created)))
})

test('experts with no token and with few tokens (under a tenth of the layer mean)', (t) => {
  // Mean 100: 9 is under 10, 10 is not.
  t.deepEqual(sparseExperts([0, 9, 10, 481, 0]), { none: [0, 4], few: [[1, 9]] })
  t.deepEqual(sparseExperts([5, 5]), { none: [], few: [] })
})

test('the coverage report at 256 experts: a scrolling table under sticky headers, a legend, the sparse experts listed', (t) => {
  const tokens = Array.from({ length: 256 }, (_, e) => (e % 50 === 7 ? 0 : e === 100 ? 1 : 40 + (e % 13)))
  const html = renderCoverageReport('/models/big', { samples: 4, seqLen: 512, tokens: 2048, layers: [{ layer: 3, tokens }], warnings: ['a <warning>'] })
  t.regex(html, /\.scroll\{[^}]*overflow:auto/)
  t.regex(html, /thead th\{position:sticky;top:0/)
  t.regex(html, /tbody th\{position:sticky;left:0/)
  t.is((html.match(/<td style=/g) ?? []).length, 256)
  t.true(html.includes('<th>255</th>'))
  t.regex(html, /class="legend"/)
  t.true(html.includes('<li>layer 3 — no token: 7, 57, 107, 157, 207; few: 100 (1)</li>'), html.slice(html.indexOf('<ul>'), html.indexOf('</ul>')))
  t.true(html.includes('5 experts saw no token'))
  t.true(html.includes('a &lt;warning&gt;'))
  t.false(html.includes('<script'))
})
