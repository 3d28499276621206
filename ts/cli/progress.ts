/**
 * A tiny progress renderer for long CLI runs, no dependencies. Each stage (calibrate, quantize, write,
 * evaluate) reports how far it is; the renderer adds the elapsed time, the stage's rate and an ETA.
 * On a terminal it keeps one bar per stage and redraws them in place; elsewhere (a log file, CI, a pipe) it
 * prints a plain line when a stage starts and when it finishes, and a heartbeat line every few seconds in
 * between, so a long run never looks hung.
 */
import type { EvaluationProgress } from '../api/evaluate'
import type { QuantizeProgress } from '../api/quantize'
import { bytes } from './format'

/** Where one stage is. */
export interface StageProgress {
  stage: string
  /** Work done (fractional: layers plus the part of the current one), of `total`. */
  done: number
  total: number
  /** What is done, in words: "12/48 layers (batch 3/32)". */
  detail: string
  /** A quantity done so far whose rate is shown (`tokens` → "… tokens/s"). */
  amount?: { value: number; unit: string }
}

export interface ProgressRenderer {
  update(progress: StageProgress): void
  /** Draws the final state and leaves the cursor below it. Safe to call more than once. */
  stop(): void
}

/** The writable side the renderer needs (process.stderr, or a fake in tests). */
export interface ProgressStream {
  write(text: string): unknown
  isTTY?: boolean
  columns?: number
}

export interface ProgressOptions {
  /** Overrides the stream's own `isTTY`. */
  tty?: boolean
  /** The clock, injectable for tests. */
  now?: () => number
  /** Milliseconds between heartbeat lines when the output is not a terminal; 0 for none. Default 5000. */
  heartbeatMs?: number
}

const BAR_WIDTH = 24
const REDRAW_MS = 80

/** `[██████░░░░]` for done of total. */
export function bar(done: number, total: number, width = BAR_WIDTH): string {
  const filled = total > 0 ? Math.min(width, Math.round((done / total) * width)) : 0
  return `[${'█'.repeat(filled)}${'░'.repeat(width - filled)}]`
}

/** 65.3 → "1m05s", 3725 → "1h02m", 4.2 → "4.2s". */
export function duration(seconds: number): string {
  if (seconds < 10) return `${seconds.toFixed(1)}s`
  const s = Math.round(seconds)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
}

/** 1234567 → "1.23M". */
function quantity(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`
  return n.toFixed(0)
}

/** A quantizeModel() progress event as a stage's progress. */
export function quantizeStage(event: QuantizeProgress): StageProgress {
  const written = event.bytesWritten > 0 ? `, ${bytes(event.bytesWritten)} written` : ''
  switch (event.stage) {
    case 'calibrate': {
      const within = event.batch < event.batches ? event.batch / event.batches : 0
      const batch = event.batch < event.batches ? ` (batch ${event.batch}/${event.batches})` : ''
      const done = event.layer + within
      return {
        stage: 'calibrate',
        done,
        total: event.layers,
        detail: `${event.layer}/${event.layers} layers${batch}, ${event.tokens.toLocaleString('en-US')} tokens/layer`,
        // Tokens through the whole model: the rate is the model's calibration throughput.
        amount: { value: (event.tokens * done) / event.layers, unit: 'tokens' },
      }
    }
    case 'quantize':
      return { stage: 'quantize', done: event.layer, total: event.layers, detail: `${event.layer}/${event.layers} layers${written}` }
    case 'write':
      return { stage: 'write', done: 0, total: 1, detail: `finishing the checkpoint${written}` }
  }
}

/** An evaluateModel() progress event as a stage's progress: each batch runs the original, then the quantized model. */
export function evaluateStage(event: EvaluationProgress): StageProgress {
  const passes = 2 * event.batches
  const pass = 2 * (event.batch - 1) + (event.model === 'quantized' ? 1 : 0)
  return {
    stage: 'evaluate',
    done: pass + event.layer / event.layers,
    total: passes,
    detail: `batch ${event.batch}/${event.batches}, ${event.model} model ${event.layer}/${event.layers} layers`,
  }
}

interface StageState {
  latest: StageProgress
  finished: boolean
}

/** Creates a renderer writing to `stream` (default stderr). */
export function createProgress(stream: ProgressStream = process.stderr, options: ProgressOptions = {}): ProgressRenderer {
  const tty = options.tty ?? stream.isTTY === true
  const now = options.now ?? Date.now
  const started = now()
  const stages = new Map<string, StageState>()
  let drawnLines = 0
  let lastDraw = 0
  let stopped = false

  /** Rate and ETA of a stage (its stages run side by side from the start), and the time since the start. */
  const timing = (state: StageState): string[] => {
    const { done, total, amount } = state.latest
    const seconds = (now() - started) / 1000
    const parts: string[] = []
    if (amount && seconds > 0 && amount.value > 0) parts.push(`${quantity(amount.value / seconds)} ${amount.unit}/s`)
    parts.push(`${duration(seconds)} elapsed`)
    if (!state.finished && done > 0 && done < total && seconds > 0) parts.push(`ETA ${duration((seconds * (total - done)) / done)}`)
    return parts
  }

  const draw = (): void => {
    const width = Math.max(20, (stream.columns || 100) - 1)
    let out = drawnLines > 0 ? `\x1b[${drawnLines}F` : ''
    for (const state of stages.values()) {
      const { stage, done, total, detail } = state.latest
      const line = `${stage.padEnd(9)} ${bar(done, total)} ${[detail, ...timing(state)].join(' · ')}`
      out += `\x1b[2K${line.slice(0, width)}\n`
    }
    drawnLines = stages.size
    lastDraw = now()
    stream.write(out)
  }

  const heartbeat = (): void => {
    for (const state of stages.values()) {
      if (!state.finished) stream.write(`moe-quant: ${state.latest.stage}: ${[state.latest.detail, ...timing(state)].join(', ')}\n`)
    }
  }
  const heartbeatMs = options.heartbeatMs ?? 5000
  const timer = !tty && heartbeatMs > 0 ? setInterval(heartbeat, heartbeatMs) : undefined
  timer?.unref()

  return {
    update(progress) {
      if (stopped) return
      let state = stages.get(progress.stage)
      const first = state === undefined
      if (!state) stages.set(progress.stage, (state = { latest: progress, finished: false }))
      state.latest = progress
      const done = progress.total > 0 && progress.done >= progress.total
      if (tty) {
        if (done) state.finished = true
        if (first || done || now() - lastDraw >= REDRAW_MS) draw()
        return
      }
      if (first) stream.write(`moe-quant: ${progress.stage}: started, ${progress.detail}\n`)
      if (done && !state.finished) {
        state.finished = true
        stream.write(`moe-quant: ${progress.stage}: done, ${[progress.detail, ...timing(state)].join(', ')}\n`)
      }
    },
    stop() {
      if (stopped) return
      stopped = true
      if (timer) clearInterval(timer)
      if (tty && stages.size > 0) draw()
    },
  }
}
