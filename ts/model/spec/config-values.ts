/**
 * config.json values as a family's transformers code reads them: the file's value when it has the key (null
 * included), else the default of the family's config class, checked for the type the forward needs.
 */
import { MoeQuantError } from '../../errors'
import type { ConfigScalar } from '../registry/types'

/** Reads config.json values, falling back to the family's transformers defaults. */
export class ConfigValues {
  constructor(
    private readonly raw: Record<string, unknown>,
    private readonly defaults: Readonly<Record<string, ConfigScalar>>,
    private readonly file: string,
  ) {}

  /** Whether config.json itself has `key` (null included). */
  has(key: string): boolean {
    return Object.prototype.hasOwnProperty.call(this.raw, key)
  }

  /** The value as transformers sees it: config.json's (null included), else the class default. */
  value(key: string): unknown {
    return Object.prototype.hasOwnProperty.call(this.raw, key) ? this.raw[key] : this.defaults[key]
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
