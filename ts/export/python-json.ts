/**
 * JSON read and written the way Python's `json` module does it, so that files we produce are byte-identical
 * to ModelOpt's (`json.dump(obj, f, indent=4)`) and to transformers' (`json.dumps(d, indent=2, sort_keys=True)`).
 *
 * JavaScript's JSON loses what Python keeps: `10000.0` and `10000` are different values in Python (float and
 * int) and print differently, `1e-05` is how Python prints 0.00001, integer-like keys keep their file order in
 * a Python dict but not in a JS object, and `ensure_ascii` escapes non-ASCII text. So values are parsed into
 * a small tree that keeps all of that: objects as `Map`s, numbers as `PyInt` (the digits) or `PyFloat`.
 */
import { MoeQuantError } from '../errors'

/** A JSON integer, kept as its digits (Python ints have no size limit). */
export class PyInt {
  constructor(readonly digits: string) {}
}

/** A JSON number with a fraction or an exponent: a Python float. */
export class PyFloat {
  constructor(readonly value: number) {}
}

export type PyJson = null | boolean | string | PyInt | PyFloat | PyJson[] | PyObject
export type PyObject = Map<string, PyJson>

/**
 * Parses JSON text as Python's `json.loads` does: key order kept, a repeated key keeps its first position and
 * its last value, `NaN`/`Infinity`/`-Infinity` accepted.
 * @throws MoeQuantError `E_CONFIG_INVALID` naming `source` and the offset of the error.
 */
export function parsePyJson(text: string, source = 'JSON text'): PyJson {
  let at = 0
  const fail = (what: string): never => {
    throw new MoeQuantError('E_CONFIG_INVALID', `${source}: not valid JSON: ${what} at offset ${at}`, { file: source })
  }
  const skipSpace = (): void => {
    while (at < text.length && ' \t\n\r'.includes(text[at] as string)) at++
  }
  const literal = (word: string): boolean => {
    if (text.startsWith(word, at)) {
      at += word.length
      return true
    }
    return false
  }
  const string = (): string => {
    at++ // opening quote
    let out = ''
    for (;;) {
      if (at >= text.length) fail('unterminated string')
      const c = text[at] as string
      if (c === '"') {
        at++
        return out
      }
      if (c < ' ') fail('control character in string')
      if (c !== '\\') {
        out += c
        at++
        continue
      }
      const e = text[at + 1]
      at += 2
      const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' }
      if (e !== undefined && e in simple) out += simple[e]
      else if (e === 'u') {
        const hex = text.slice(at, at + 4)
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('bad \\u escape')
        out += String.fromCharCode(Number.parseInt(hex, 16))
        at += 4
      } else fail('bad escape')
    }
  }
  const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?/y
  const value = (): PyJson => {
    skipSpace()
    const c = text[at]
    if (c === '{') {
      at++
      const object: PyObject = new Map()
      skipSpace()
      if (text[at] === '}') {
        at++
        return object
      }
      for (;;) {
        skipSpace()
        if (text[at] !== '"') fail('expected a property name')
        const key = string()
        skipSpace()
        if (text[at] !== ':') fail("expected ':'")
        at++
        object.set(key, value())
        skipSpace()
        if (text[at] === ',') at++
        else if (text[at] === '}') {
          at++
          return object
        } else fail("expected ',' or '}'")
      }
    }
    if (c === '[') {
      at++
      const array: PyJson[] = []
      skipSpace()
      if (text[at] === ']') {
        at++
        return array
      }
      for (;;) {
        array.push(value())
        skipSpace()
        if (text[at] === ',') at++
        else if (text[at] === ']') {
          at++
          return array
        } else fail("expected ',' or ']'")
      }
    }
    if (c === '"') return string()
    if (literal('null')) return null
    if (literal('true')) return true
    if (literal('false')) return false
    if (literal('NaN')) return new PyFloat(Number.NaN)
    if (literal('Infinity')) return new PyFloat(Number.POSITIVE_INFINITY)
    if (literal('-Infinity')) return new PyFloat(Number.NEGATIVE_INFINITY)
    NUMBER.lastIndex = at
    const match = NUMBER.exec(text)
    if (!match) return fail('unexpected character')
    at += match[0].length
    return match[1] !== undefined || match[2] !== undefined ? new PyFloat(Number(match[0])) : new PyInt(match[0])
  }
  const result = value()
  skipSpace()
  if (at !== text.length) fail('extra data')
  return result
}

/** Converts a plain JS value (objects, arrays, strings, numbers, booleans, null) into the tree. */
export function toPyJson(value: unknown): PyJson {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return value
  if (value instanceof PyInt || value instanceof PyFloat || value instanceof Map) return value as PyJson
  if (typeof value === 'number') return Number.isInteger(value) && !Object.is(value, -0) ? new PyInt(String(value)) : new PyFloat(value)
  if (Array.isArray(value)) return value.map(toPyJson)
  if (typeof value === 'object') return new Map(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, toPyJson(v)]))
  throw new TypeError(`toPyJson: cannot represent a ${typeof value} in JSON`)
}

/** Python's `repr(float)`: the shortest round-trip digits, exponent form below 1e-4 and from 1e16 on. */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN'
  if (x === Number.POSITIVE_INFINITY) return 'Infinity'
  if (x === Number.NEGATIVE_INFINITY) return '-Infinity'
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0'
  const sign = x < 0 ? '-' : ''
  // toExponential() without a digit count gives the shortest digits that read back as x, as repr does.
  const [mantissa, exp] = Math.abs(x).toExponential().split('e') as [string, string]
  const digits = mantissa.replace('.', '')
  const e = Number(exp)
  const point = e + 1 // digits before the decimal point
  if (point > -4 && point <= 16) {
    if (point <= 0) return `${sign}0.${'0'.repeat(-point)}${digits}`
    if (point >= digits.length) return `${sign}${digits}${'0'.repeat(point - digits.length)}.0`
    return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`
  }
  const head = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits
  return `${sign}${head}e${e < 0 ? '-' : '+'}${String(Math.abs(e)).padStart(2, '0')}`
}

/** A string as Python's json writes it with `ensure_ascii=True` (the default). */
export function pyString(s: string): string {
  let out = '"'
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 0x22) out += '\\"'
    else if (c === 0x5c) out += '\\\\'
    else if (c === 0x0a) out += '\\n'
    else if (c === 0x0d) out += '\\r'
    else if (c === 0x09) out += '\\t'
    else if (c === 0x08) out += '\\b'
    else if (c === 0x0c) out += '\\f'
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, '0')}`
    else out += s[i]
  }
  return `${out}"`
}

/** Compares keys as Python compares `str`: by code point (JS `<` compares UTF-16 units). */
function byCodePoint(a: string, b: string): number {
  const x = Array.from(a, (c) => c.codePointAt(0) as number)
  const y = Array.from(b, (c) => c.codePointAt(0) as number)
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return (x[i] as number) - (y[i] as number)
  return x.length - y.length
}

/** Returns a copy with every object's keys sorted, as `json.dumps(..., sort_keys=True)` writes them. */
export function sortKeysDeep(value: PyJson): PyJson {
  if (Array.isArray(value)) return value.map(sortKeysDeep)
  if (value instanceof Map) {
    return new Map([...value.keys()].sort(byCodePoint).map((k) => [k, sortKeysDeep(value.get(k) as PyJson)]))
  }
  return value
}

/**
 * Python's `json.dumps(value, indent=indent)`: `,` and `: ` separators, one item per line, `[]`/`{}` when
 * empty, ASCII only, no trailing newline. Plain JS values are accepted too (integral numbers print as ints).
 */
export function dumpPyJson(value: unknown, indent = 4): string {
  const write = (v: PyJson, depth: number): string => {
    if (v === null) return 'null'
    if (v === true) return 'true'
    if (v === false) return 'false'
    if (typeof v === 'string') return pyString(v)
    if (v instanceof PyInt) return v.digits === '-0' ? '0' : v.digits
    if (v instanceof PyFloat) return pyFloatRepr(v.value)
    const inner = '\n' + ' '.repeat(indent * (depth + 1))
    const outer = '\n' + ' '.repeat(indent * depth)
    if (Array.isArray(v)) {
      if (v.length === 0) return '[]'
      return `[${inner}${v.map((item) => write(item, depth + 1)).join(`,${inner}`)}${outer}]`
    }
    if (v.size === 0) return '{}'
    const items = [...v].map(([k, item]) => `${pyString(k)}: ${write(item, depth + 1)}`)
    return `{${inner}${items.join(`,${inner}`)}${outer}}`
  }
  return write(toPyJson(value), 0)
}
