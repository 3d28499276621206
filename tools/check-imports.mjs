#!/usr/bin/env node
// Run by `npm test` before the specs: keeps the TypeScript in ts/ small and layered. Fails (exit 1) on
//   - an import cycle between modules of ts/ (every relative `import … from`, `export … from`, `import()` and
//     `require()` is an edge, type-only imports included: a cycle of types still ties two concepts together);
//   - a file over 500 lines;
//   - a function over 80 lines.
// The generated contract types (ts/native/generated/) are part of the import graph but exempt from the sizes.
//
// Functions are found with a heuristic over the code with comments, strings, template text and regular
// expressions blanked out (so their braces do not count), and measured from the line that names them to the
// line of the brace that closes their body:
//   - `function` declarations (`export`, `async`, generators included);
//   - arrow functions and function expressions assigned to `const`/`let`/`var`, when their body is a block
//     (a curried `(a) => (b) => { … }` is measured from the outer name; an expression body is not measured);
//   - methods of classes and object literals, constructors, getters and setters: a line that starts with a
//     name and a parameter list whose body block follows (optionally after a return type).
// A return type that is an object literal spanning lines, and callbacks passed inline, are not measured.
//
// Usage: node tools/check-imports.mjs [--list] [dir]   (default: ts/ beside this script's folder; --list prints
// every function measured with its length)
import { readdirSync, readFileSync, statSync } from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const MAX_FILE_LINES = 500
const MAX_FUNCTION_LINES = 80
const EXEMPT_FROM_SIZES = `native${path.sep}generated${path.sep}`

const args = process.argv.slice(2)
const list = args.includes('--list')
const root = path.resolve(args.find((a) => a !== '--list') ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'ts'))

/** Every `.ts` file under `dir`, sorted. */
function sources(dir) {
  const out = []
  for (const name of readdirSync(dir).sort()) {
    const file = path.join(dir, name)
    if (statSync(file).isDirectory()) out.push(...sources(file))
    else if (name.endsWith('.ts')) out.push(file)
  }
  return out
}

// ---------------------------------------------------------------------------------------------------------
// Blanking: the source with comments, string and template text and regular expressions replaced by spaces
// (newlines kept, so offsets and line numbers are those of the source). Code inside `${…}` is kept.

/** Keywords after which a `/` starts a regular expression rather than a division. */
const BEFORE_REGEX = new Set(['return', 'typeof', 'case', 'do', 'else', 'in', 'of', 'new', 'delete', 'void', 'throw', 'instanceof', 'yield', 'await'])

function blank(text) {
  const out = text.split('')
  const erase = (from, to) => {
    for (let i = from; i < to; i++) if (out[i] !== '\n') out[i] = ' '
  }
  /** Template literals being read: the brace depth of the `${…}` expression each is inside. */
  const templates = []
  let i = 0
  let lastCode = '' // last significant code character
  let lastWord = ''
  const readTemplate = () => {
    // At the character after a backtick or a closing `}` of an expression: read text up to `${` or the end.
    const start = i
    while (i < text.length) {
      if (text[i] === '\\') i += 2
      else if (text[i] === '`') {
        i++
        erase(start - 1, i)
        templates.pop()
        lastCode = '`'
        return
      } else if (text[i] === '$' && text[i + 1] === '{') {
        i += 2
        erase(start - 1, i)
        templates[templates.length - 1] = 0
        lastCode = '{'
        return
      } else i++
    }
    erase(start - 1, i)
  }
  while (i < text.length) {
    const c = text[i]
    const next = text[i + 1]
    if (c === '/' && next === '/') {
      const end = text.indexOf('\n', i)
      erase(i, end < 0 ? text.length : end)
      i = end < 0 ? text.length : end
    } else if (c === '/' && next === '*') {
      const end = text.indexOf('*/', i + 2)
      erase(i, end < 0 ? text.length : end + 2)
      i = end < 0 ? text.length : end + 2
    } else if (c === "'" || c === '"') {
      const start = i++
      while (i < text.length && text[i] !== c && text[i] !== '\n') i += text[i] === '\\' ? 2 : 1
      erase(start, ++i)
      lastCode = c
    } else if (c === '`') {
      templates.push(-1)
      i++
      readTemplate()
    } else if (c === '/' && (lastCode === '' || '(,=:[!&|?{};~+-*%<>^'.includes(lastCode) || BEFORE_REGEX.has(lastWord))) {
      const start = i++
      let inClass = false
      while (i < text.length && text[i] !== '\n') {
        if (text[i] === '\\') i++
        else if (text[i] === '[') inClass = true
        else if (text[i] === ']') inClass = false
        else if (text[i] === '/' && !inClass) break
        i++
      }
      i++
      while (/[a-z]/.test(text[i] ?? '')) i++
      erase(start, i)
      lastCode = '/'
      lastWord = ''
    } else {
      if (templates.length > 0 && (c === '{' || c === '}')) {
        const depth = templates[templates.length - 1]
        if (c === '}' && depth === 0) {
          i++
          readTemplate()
          continue
        }
        templates[templates.length - 1] = depth + (c === '{' ? 1 : -1)
      }
      if (/[\w$]/.test(c)) {
        let end = i
        while (end < text.length && /[\w$]/.test(text[end])) end++
        lastWord = text.slice(i, end)
        lastCode = text[end - 1]
        i = end
        continue
      }
      if (!/\s/.test(c)) {
        lastCode = c
        lastWord = ''
      }
      i++
    }
  }
  return out.join('')
}

// ---------------------------------------------------------------------------------------------------------
// Imports.

const IMPORT = /\b(?:import|export)\b[^;'"`]*?\bfrom\s*(['"])(\.{1,2}\/[^'"]*)\1|\bimport\s*(['"])(\.{1,2}\/[^'"]*)\3|\b(?:import|require)\s*\(\s*(['"])(\.{1,2}\/[^'"]*)\5\s*\)/g

/** The ts/ files `file` imports (relative specifiers that resolve inside ts/). */
function importsOf(file, text, code, known) {
  const edges = new Set()
  for (const match of text.matchAll(IMPORT)) {
    if (code[match.index] === ' ') continue // inside a comment or a string
    const spec = match[2] ?? match[4] ?? match[6]
    const base = path.resolve(path.dirname(file), spec.replace(/\.js$/, ''))
    const target = [`${base}.ts`, path.join(base, 'index.ts')].find((candidate) => known.has(candidate))
    if (target) edges.add(target)
  }
  return [...edges]
}

/** Strongly connected components of more than one module (or a module importing itself), Tarjan's way. */
function cycles(graph) {
  let counter = 0
  const index = new Map()
  const low = new Map()
  const stack = []
  const onStack = new Set()
  const found = []
  const visit = (node) => {
    index.set(node, counter)
    low.set(node, counter++)
    stack.push(node)
    onStack.add(node)
    for (const next of graph.get(node) ?? []) {
      if (!index.has(next)) {
        visit(next)
        low.set(node, Math.min(low.get(node), low.get(next)))
      } else if (onStack.has(next)) low.set(node, Math.min(low.get(node), index.get(next)))
    }
    if (low.get(node) !== index.get(node)) return
    const component = []
    let member
    do {
      member = stack.pop()
      onStack.delete(member)
      component.push(member)
    } while (member !== node)
    if (component.length > 1 || (graph.get(node) ?? []).includes(node)) found.push(component)
  }
  for (const node of graph.keys()) if (!index.has(node)) visit(node)
  return found
}

/** One concrete cycle through `component`, as a path that returns to its start. */
function cyclePath(graph, component) {
  const members = new Set(component)
  const start = [...component].sort()[0]
  const previous = new Map([[start, null]])
  const queue = [start]
  while (queue.length > 0) {
    const node = queue.shift()
    for (const next of graph.get(node) ?? []) {
      if (!members.has(next)) continue
      if (next === start) {
        const route = [node]
        for (let at = previous.get(node); at !== null; at = previous.get(at)) route.unshift(at)
        return [...route, start]
      }
      if (!previous.has(next)) {
        previous.set(next, node)
        queue.push(next)
      }
    }
  }
  return component
}

// ---------------------------------------------------------------------------------------------------------
// Functions.

const KEYWORDS = new Set(['if', 'for', 'while', 'switch', 'catch', 'with', 'return', 'function', 'typeof', 'await', 'new', 'super', 'import', 'require'])
const DECLARATION = /^[ \t]*(?:export[ \t]+)?(?:default[ \t]+)?(?:async[ \t]+)?function\b[ \t]*\*?[ \t]*([\w$]*)[ \t]*(?:<[^(]*>)?[ \t]*\(/gm
const ASSIGNED = /^[ \t]*(?:export[ \t]+)?(?:const|let|var)[ \t]+([\w$]+)[ \t]*(?::[^=\n]*)?=[ \t]*(?:async[ \t]+)?(?:(function\b[ \t]*\*?[ \t]*[\w$]*[ \t]*\()|(<[^(=]*>[ \t]*\()|(\()|([\w$]+[ \t]*=>))/gm
const METHOD = /^[ \t]*(?:(?:public|private|protected|static|async|override|readonly|get|set)[ \t]+)*\*?([\w$]+)[ \t]*(?:<[^(]*>)?[ \t]*\(/gm

/** The offset just past the bracket that closes the one at `open`, or -1. */
function closing(code, open) {
  const pairs = { '(': ')', '[': ']', '{': '}' }
  const stack = []
  for (let i = open; i < code.length; i++) {
    const c = code[i]
    if (c in pairs) stack.push(pairs[c])
    else if (c === ')' || c === ']' || c === '}') {
      if (stack.pop() !== c) return -1
      if (stack.length === 0) return i + 1
    }
  }
  return -1
}

const skipSpace = (code, at) => {
  while (at < code.length && /\s/.test(code[at])) at++
  return at
}

/**
 * After a parameter list ending at `at`: the offset of the body's `{`, skipping a return type, or -1 when no
 * block follows. In a type, a `{` right after `:`, `|`, `&`, `<`, `,`, `(` or `[` opens an object type; one
 * that follows a complete type (a name, `)`, `]`, `}` or `>`) opens the body.
 */
function bodyAfterParameters(code, at, { arrow }) {
  let i = skipSpace(code, at)
  let sawArrow = false
  if (code[i] === ':') {
    i++
    let last = ':'
    for (; i < code.length; i++) {
      const c = code[i]
      if (/\s/.test(c)) {
        if (c === '\n' && /[\w$)\]}>]/.test(last)) {
          const ahead = skipSpace(code, i)
          if (!/[|&.<[{=]/.test(code[ahead] ?? '')) return -1 // the type ended and no block follows
        }
        continue
      }
      if (c === '=' && code[i + 1] === '>') {
        if (arrow && /[\w$)\]}>]/.test(last)) {
          sawArrow = true
          i += 2
          break
        }
        last = '>'
        i++
        continue
      }
      if (c === '{' && /[\w$)\]}>]/.test(last)) break
      if (c === '(' || c === '[' || c === '{' || c === '<') {
        if (c === '<') {
          last = '<'
          continue
        }
        const end = closing(code, i)
        if (end < 0) return -1
        i = end - 1
        last = code[i]
        continue
      }
      if (c === ';' || c === '}' || c === ')' || (c === '=' && code[i + 1] !== '>')) return -1
      last = c
    }
  }
  if (arrow) {
    if (!sawArrow) {
      i = skipSpace(code, i)
      if (code[i] !== '=' || code[i + 1] !== '>') return -1
      i += 2
    }
    i = skipSpace(code, i)
    if (code[i] === '{') return i
    // A curried arrow: `(a) => (b) => { … }` or `(a) => async (b) => { … }`.
    if (code.startsWith('async', i)) i = skipSpace(code, i + 5)
    if (code[i] === '(') {
      const end = closing(code, i)
      return end < 0 ? -1 : bodyAfterParameters(code, end, { arrow: true })
    }
    return -1
  }
  i = skipSpace(code, i)
  return code[i] === '{' ? i : -1
}

function lineOf(code, offset) {
  let line = 1
  for (let i = 0; i < offset; i++) if (code[i] === '\n') line++
  return line
}

/** Every function found in `code` (blanked), with its name and first and last lines. */
function functionsOf(code) {
  const found = new Map() // body offset → function; a body is counted once whichever pattern found it
  const add = (name, start, body) => {
    if (body < 0 || found.has(body)) return
    const end = closing(code, body)
    if (end < 0) return
    found.set(body, { name: name || '(anonymous)', first: lineOf(code, start), last: lineOf(code, end - 1) })
  }
  for (const match of code.matchAll(DECLARATION)) {
    const open = match.index + match[0].length - 1
    const end = closing(code, open)
    if (end > 0) add(match[1], match.index, bodyAfterParameters(code, end, { arrow: false }))
  }
  for (const match of code.matchAll(ASSIGNED)) {
    const [, name, fn, generic, paren, single] = match
    const at = match.index + match[0].length
    if (fn) {
      const end = closing(code, at - 1)
      if (end > 0) add(name, match.index, bodyAfterParameters(code, end, { arrow: false }))
    } else if (generic || paren) {
      const end = closing(code, at - 1)
      if (end > 0) add(name, match.index, bodyAfterParameters(code, end, { arrow: true }))
    } else if (single) {
      const i = skipSpace(code, at)
      if (code[i] === '{') add(name, match.index, i)
    }
  }
  for (const match of code.matchAll(METHOD)) {
    if (KEYWORDS.has(match[1])) continue
    const end = closing(code, match.index + match[0].length - 1)
    if (end > 0) add(match[1], match.index, bodyAfterParameters(code, end, { arrow: false }))
  }
  return [...found.values()].sort((a, b) => a.first - b.first)
}

// ---------------------------------------------------------------------------------------------------------

const files = sources(root)
const known = new Set(files)
const graph = new Map()
const problems = []
let measured = 0
for (const file of files) {
  const text = readFileSync(file, 'utf8')
  const code = blank(text)
  graph.set(file, importsOf(file, text, code, known))
  const relative = path.relative(root, file)
  if (relative.startsWith(EXEMPT_FROM_SIZES)) continue
  const lines = text.split('\n').length - (text.endsWith('\n') ? 1 : 0)
  if (lines > MAX_FILE_LINES) problems.push(`${relative}: ${lines} lines (at most ${MAX_FILE_LINES})`)
  for (const fn of functionsOf(code)) {
    measured++
    const length = fn.last - fn.first + 1
    if (list) console.log(`${String(length).padStart(4)}  ${relative}:${fn.first} ${fn.name}`)
    if (length > MAX_FUNCTION_LINES) problems.push(`${relative}:${fn.first}: function ${fn.name} is ${length} lines (at most ${MAX_FUNCTION_LINES})`)
  }
}
for (const component of cycles(graph)) {
  const route = cyclePath(graph, component).map((file) => path.relative(root, file))
  const others = component.map((file) => path.relative(root, file)).filter((file) => !route.includes(file)).sort()
  problems.push(`import cycle: ${route.join(' → ')}${others.length > 0 ? ` (also tied into it: ${others.join(', ')})` : ''}`)
}

if (problems.length > 0) {
  for (const problem of problems) console.error(`check-imports: ${problem}`)
  process.exit(1)
}
console.log(`check-imports: ${files.length} files, ${measured} functions: no import cycle, no file over ${MAX_FILE_LINES} lines, no function over ${MAX_FUNCTION_LINES}`)
