/**
 * Checks shared by the public functions' option objects: JavaScript callers are not protected by the types,
 * so an unknown (often misspelled) key is refused with the list of valid ones and the closest match.
 */
import { MoeQuantError } from '../errors'

/** Levenshtein distance between `a` and `b`. */
export function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1)
      current.push(Math.min((previous[j] as number) + 1, (current[j - 1] as number) + 1, substitution))
    }
    previous = current
  }
  return previous[b.length] as number
}

/** The candidate closest to `word` (case ignored), if it is close enough to be a likely misspelling. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined
  let bestDistance = Number.POSITIVE_INFINITY
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase())
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance]
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined
}

/**
 * Refuses keys of `options` that are not in `allowed`; `prefix` names the object in messages (`''` for the
 * top level, `'calibration.'` for a nested one).
 * @throws MoeQuantError `E_OPTION_INVALID`: "kvcache: unknown option (did you mean kvCache?); valid options: …"
 */
export function rejectUnknownKeys(options: object, allowed: readonly string[], prefix = ''): void {
  for (const key of Object.keys(options)) {
    if (allowed.includes(key)) continue
    const guess = closest(key, allowed)
    throw new MoeQuantError(
      'E_OPTION_INVALID',
      `${prefix}${key}: unknown option${guess ? ` (did you mean ${prefix}${guess}?)` : ''}; valid options: ${allowed.map((k) => prefix + k).join(', ')}`,
    )
  }
}

/** The devices moe-quant names: `cpu`, `cuda`, `cuda:N`. */
export const DEVICE = /^(cpu|cuda(:\d+)?)$/

/** `'cpu'`, `'cuda'` or `'cuda:N'` (default `'cpu'`). @throws MoeQuantError `E_OPTION_INVALID` */
export function checkDevice(device: unknown = 'cpu'): string {
  if (typeof device !== 'string' || !DEVICE.test(device)) {
    throw new MoeQuantError('E_OPTION_INVALID', `device: expected 'cpu', 'cuda' or 'cuda:N', got ${JSON.stringify(device)}`)
  }
  return device
}
