/**
 * Module-name patterns of the options (`exclude`, a recipe's rules): `*` wildcards over whole module names.
 */
import { MoeQuantError } from '../errors'

/** `*` wildcards → a RegExp over whole module names. */
export function globToRegExp(pattern: string): RegExp {
  const escaped = pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')
  return new RegExp(`^${escaped}$`)
}

/** The caller's exclude patterns, remembering which matched a module: one that matches none is most likely misspelled. */
export class Excludes {
  private readonly patterns: RegExp[]
  private readonly matched = new Set<number>()

  constructor(private readonly given: readonly string[]) {
    this.patterns = given.map(globToRegExp)
  }

  /** Whether `module` is excluded. */
  test(module: string): boolean {
    const hits = this.patterns.flatMap((re, i) => (re.test(module) ? [i] : []))
    for (const i of hits) this.matched.add(i)
    return hits.length > 0
  }

  /** @throws MoeQuantError `E_OPTION_INVALID` naming the patterns that matched no module, with examples of names. */
  refuseUnmatched(quantizedModules: readonly string[]): void {
    refuseUnmatched('exclude', this.given.filter((_, i) => !this.matched.has(i)), 'module', quantizedModules)
  }
}

/**
 * @throws MoeQuantError `E_OPTION_INVALID` when `unmatched` (patterns of `option` that matched no `what` of the model)
 *   is not empty, naming them, with examples of names from `modules` (layer indices as `*`).
 */
export function refuseUnmatched(option: string, unmatched: readonly string[], what: string, modules: readonly string[]): void {
  if (unmatched.length === 0) return
  const examples = [...new Set(modules.map((m) => m.replace(/\.\d+\./g, '.*.')))].slice(0, 4)
  throw new MoeQuantError(
    'E_OPTION_INVALID',
    `${option}: ${unmatched.map((p) => JSON.stringify(p)).join(', ')} ${unmatched.length > 1 ? 'match' : 'matches'} no ${what} of this model ` +
      `(patterns match whole module names with * wildcards, e.g. ${examples.join(', ')})`,
  )
}

