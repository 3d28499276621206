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

const MAX_DEPTH = 1000

const ESCAPES: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' }

/** A recursive-descent reader of one JSON text; `at` is the offset of the next character. */
class PyJsonReader {
  at = 0
  /** Arrays and objects open around `at`: deeper than MAX_DEPTH is refused (Python's json stops near 1000 too). */
  private depth = 0
  private readonly number = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?/y

  constructor(
    private readonly text: string,
    private readonly source: string,
  ) {}

  fail(what: string): never {
    throw new MoeQuantError('E_CONFIG_INVALID', `${this.source}: not valid JSON: ${what} at offset ${this.at}`, { file: this.source })
  }

  skipSpace(): void {
    while (this.at < this.text.length && ' \t\n\r'.includes(this.text[this.at] as string)) this.at++
  }

  private literal(word: string): boolean {
    if (!this.text.startsWith(word, this.at)) return false
    this.at += word.length
    return true
  }

  private string(): string {
    const { text } = this
    this.at++ // opening quote
    let out = ''
    for (;;) {
      if (this.at >= text.length) this.fail('unterminated string')
      const c = text[this.at] as string
      if (c === '"') {
        this.at++
        return out
      }
      if (c < ' ') this.fail('control character in string')
      if (c !== '\\') {
        out += c
        this.at++
        continue
      }
      const e = text[this.at + 1]
      this.at += 2
      if (e !== undefined && e in ESCAPES) out += ESCAPES[e]
      else if (e === 'u') {
        const hex = text.slice(this.at, this.at + 4)
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail('bad \\u escape')
        out += String.fromCharCode(Number.parseInt(hex, 16))
        this.at += 4
      } else this.fail('bad escape')
    }
  }

  private enter(): void {
    if (++this.depth > MAX_DEPTH) this.fail(`arrays and objects nested more than ${MAX_DEPTH} deep`)
  }

  private object(): PyObject {
    this.enter()
    this.at++
    const object: PyObject = new Map()
    this.skipSpace()
    if (this.text[this.at] === '}') {
      this.at++
      this.depth--
      return object
    }
    for (;;) {
      this.skipSpace()
      if (this.text[this.at] !== '"') this.fail('expected a property name')
      const key = this.string()
      this.skipSpace()
      if (this.text[this.at] !== ':') this.fail("expected ':'")
      this.at++
      object.set(key, this.value())
      this.skipSpace()
      if (this.text[this.at] === ',') this.at++
      else if (this.text[this.at] === '}') {
        this.at++
        this.depth--
        return object
      } else this.fail("expected ',' or '}'")
    }
  }

  private array(): PyJson[] {
    this.enter()
    this.at++
    const array: PyJson[] = []
    this.skipSpace()
    if (this.text[this.at] === ']') {
      this.at++
      this.depth--
      return array
    }
    for (;;) {
      array.push(this.value())
      this.skipSpace()
      if (this.text[this.at] === ',') this.at++
      else if (this.text[this.at] === ']') {
        this.at++
        this.depth--
        return array
      } else this.fail("expected ',' or ']'")
    }
  }

  value(): PyJson {
    this.skipSpace()
    const c = this.text[this.at]
    if (c === '{') return this.object()
    if (c === '[') return this.array()
    if (c === '"') return this.string()
    if (this.literal('null')) return null
    if (this.literal('true')) return true
    if (this.literal('false')) return false
    if (this.literal('NaN')) return new PyFloat(Number.NaN)
    if (this.literal('Infinity')) return new PyFloat(Number.POSITIVE_INFINITY)
    if (this.literal('-Infinity')) return new PyFloat(Number.NEGATIVE_INFINITY)
    this.number.lastIndex = this.at
    const match = this.number.exec(this.text)
    if (!match) return this.fail('unexpected character')
    this.at += match[0].length
    return match[1] !== undefined || match[2] !== undefined ? new PyFloat(Number(match[0])) : new PyInt(match[0])
  }
}

/**
 * Parses JSON text as Python's `json.loads` does: key order kept, a repeated key keeps its first position and
 * its last value, `NaN`/`Infinity`/`-Infinity` accepted.
 * @throws MoeQuantError `E_CONFIG_INVALID` naming `source` and the offset of the error.
 */
export function parsePyJson(text: string, source = 'JSON text'): PyJson {
  const reader = new PyJsonReader(text, source)
  const result = reader.value()
  reader.skipSpace()
  if (reader.at !== text.length) reader.fail('extra data')
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
