/**
 * A tiny progress renderer for long CLI runs, no dependencies. On a terminal it keeps one bar per stage
 * (calibrate, quantize, write) and redraws them in place; elsewhere (a log file, CI) it prints a plain line
 * when a stage starts and when it finishes, so logs stay short.
 */
import type { QuantizeProgress } from '../quantize-types'
import { bytes } from './format'

export interface ProgressRenderer {
  update(event: QuantizeProgress): void
  /** Draws the final state and leaves the cursor below it. Safe to call more than once. */
  stop(): void
}

/** The writable side the renderer needs (process.stderr, or a fake in tests). */
export interface ProgressStream {
  write(text: string): unknown
  isTTY?: boolean
  columns?: number
}

const BAR_WIDTH = 24
const REDRAW_MS = 80

/** `[██████░░░░]` for done of total. */
export function bar(done: number, total: number, width = BAR_WIDTH): string {
  const filled = total > 0 ? Math.min(width, Math.round((done / total) * width)) : 0
  return `[${'█'.repeat(filled)}${'░'.repeat(width - filled)}]`
}

function describe(event: QuantizeProgress): string {
  const parts = [`${event.layer}/${event.layers} layers`]
  if (event.stage === 'calibrate' && event.tokens > 0) parts.push(`${event.tokens.toLocaleString('en-US')} tokens/layer`)
  if (event.bytesWritten > 0) parts.push(`${bytes(event.bytesWritten)} written`)
  return parts.join(', ')
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`

/**
 * Creates a renderer writing to `stream` (default stderr). `tty` overrides the stream's own `isTTY`;
 * `now` is injectable for tests.
 */
export function createProgress(
  stream: ProgressStream = process.stderr,
  options: { tty?: boolean; now?: () => number } = {},
): ProgressRenderer {
  const tty = options.tty ?? stream.isTTY === true
  const now = options.now ?? Date.now
  const started = now()
  const latest = new Map<QuantizeProgress['stage'], QuantizeProgress>()
  const finished = new Set<QuantizeProgress['stage']>()
  let drawnLines = 0
  let lastDraw = 0
  let stopped = false

  const draw = (): void => {
    const width = Math.max(20, (stream.columns || 100) - 1)
    let out = drawnLines > 0 ? `\x1b[${drawnLines}F` : ''
    for (const [stage, event] of latest) {
      const line = `${stage.padEnd(9)} ${bar(event.layer, event.layers)} ${describe(event)}`
      out += `\x1b[2K${line.slice(0, width)}\n`
    }
    drawnLines = latest.size
    lastDraw = now()
    stream.write(out)
  }

  return {
    update(event) {
      if (stopped) return
      const first = !latest.has(event.stage)
      latest.set(event.stage, event)
      const done = event.layer >= event.layers
      if (tty) {
        if (first || done || now() - lastDraw >= REDRAW_MS) draw()
        return
      }
      if (first) {
        stream.write(
          event.stage === 'write'
            ? `moe-quant: write: finishing the checkpoint (${bytes(event.bytesWritten)} written so far)\n`
            : `moe-quant: ${event.stage}: started (${event.layers} layers)\n`,
        )
      }
      // The write stage's only event comes as the last files are written; the summary marks its end.
      if (done && event.stage !== 'write' && !finished.has(event.stage)) {
        finished.add(event.stage)
        stream.write(`moe-quant: ${event.stage}: done, ${describe(event)} (${seconds(now() - started)})\n`)
      }
    },
    stop() {
      if (stopped) return
      stopped = true
      if (tty && latest.size > 0) draw()
    },
  }
}
