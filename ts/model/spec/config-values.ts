/**
 * config.json values as a family's transformers code reads them: the file's value when it has the key (null
 * included), under the name its config class stores it under or its own, else the default of the family's config
 * class, checked for the type the forward needs. A key `a.b` is key `b` of the object `a`.
 */
import { MoeQuantError } from '../../errors'
import type { ConfigScalar } from '../registry/types'

/** Reads config.json values, falling back to the family's transformers defaults. */
export class ConfigValues {
  /**
   * @param aliases the names the config class stores keys under (its `attribute_map`: Kimi-Linear's
   *   `moe_renormalize` for `norm_topk_prob`), read before the key itself
   */
  constructor(
    private readonly raw: Record<string, unknown>,
    private readonly defaults: Readonly<Record<string, ConfigScalar>>,
    private readonly file: string,
    private readonly aliases: Readonly<Record<string, readonly string[]>> = {},
  ) {}

  /** config.json's value of `key` (null included), when it has one. */
  private find(key: string): { value: unknown } | undefined {
    for (const name of [...(this.aliases[key] ?? []), key]) {
      let node: unknown = this.raw
      let found = true
      for (const part of name.split('.')) {
        found = isObject(node) && Object.prototype.hasOwnProperty.call(node, part)
        if (!found) break
        node = (node as Record<string, unknown>)[part]
      }
      if (found) return { value: node }
    }
    return undefined
  }

  /** Whether config.json itself has `key` (null included). */
  has(key: string): boolean {
    return this.find(key) !== undefined
  }

  /** The value as transformers sees it: config.json's (null included), else the class default. */
  value(key: string): unknown {
    const found = this.find(key)
    return found ? found.value : this.defaults[key]
  }

  invalid(key: string, expected: string, value: unknown = this.value(key)): never {
    throw new MoeQuantError('E_CONFIG_INVALID', `${this.file}: "${key}" must be ${expected}, got ${JSON.stringify(value)}`, {
      file: this.file,
    })
  }

  number(key: string): number {
    const value = this.value(key)
    if (typeof value !== 'number' || !Number.isFinite(value)) this.invalid(key, 'a number')
    return value
  }

  integer(key: string, min = 1): number {
    const value = this.value(key)
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) this.invalid(key, `an integer ≥ ${min}`)
    return value
  }

  /** An integer, or null when config.json (or the default) says null. */
  optionalInteger(key: string): number | null {
    const value = this.value(key)
    return value === null || value === undefined ? null : this.integer(key)
  }

  boolean(key: string): boolean {
    const value = this.value(key)
    if (typeof value !== 'boolean') this.invalid(key, 'true or false')
    return value
  }
}

export const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value)

/** Python truthiness of a config number (None and 0 are false). */
export const truthy = (value: unknown): value is number => typeof value === 'number' && value !== 0
