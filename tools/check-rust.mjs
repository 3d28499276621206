#!/usr/bin/env node
// Run by `npm test` beside check-imports.mjs: keeps the Rust of crates/*/src small and layered. Fails (exit 1) on
//   - a module of crates/core/src importing (`crate::x`, outside its `#[cfg(test)]` module) a module on its own
//     floor or above (FLOORS below, as ARCHITECTURE.md draws them), or a module missing from FLOORS;
//   - a file over 500 lines;
//   - a function over 80 lines, measured from the line of `fn name` to the line of the brace closing its body,
//     over the code with comments, strings and character literals blanked out (so their braces do not count).
//
// Usage: node tools/check-rust.mjs [--list]   (--list prints every function measured with its length)
import { readdirSync, readFileSync, statSync } from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const MAX_FILE_LINES = 500
const MAX_FUNCTION_LINES = 80
/** Each module of the core's crate root and its floor: a module imports only from lower floors. */
const FLOORS = {
  error: 0,
  limits: 1, memory: 1, threads: 1,
  numerics: 2,
  checkpoint: 3, cuda: 3,
  device: 4, formats: 4,
  awq: 5, calib: 5,
  model: 6,
  export: 7,
  ops: 8,
  contract: 9,
}

const repo = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const list = process.argv.includes('--list')

function sources(dir) {
  const out = []
  for (const name of readdirSync(dir).sort()) {
    const file = path.join(dir, name)
    if (statSync(file).isDirectory()) out.push(...sources(file))
    else if (name.endsWith('.rs')) out.push(file)
  }
  return out
}

/** The code with comments, strings and character literals replaced by spaces (newlines kept). */
function blank(code) {
  const spaces = (text) => text.replace(/[^\n]/g, ' ')
  return code.replace(
    /\/\/[^\n]*|\/\*[\s\S]*?\*\/|b?r(#*)"[\s\S]*?"\1|b?"(?:\\[\s\S]|[^"\\])*"|b?'(?:\\.|[^'\\\n])'/g,
    spaces,
  )
}

/** The index of the brace closing the one at `open`. */
function closing(code, open) {
  let depth = 0
  for (let i = open; i < code.length; i++) {
    if (code[i] === '{') depth++
    else if (code[i] === '}' && --depth === 0) return i
  }
  return code.length - 1
}

const lineOf = (code, index) => code.slice(0, index).split('\n').length

/** Every function with a body: name, first and last line. */
function functions(code) {
  const found = []
  for (const match of code.matchAll(/\bfn\s+([A-Za-z_]\w*)/g)) {
    // The body starts at the first `{` outside the parameter list and return type; a `;` first means none.
    let depth = 0
    let i = match.index + match[0].length
    for (; i < code.length; i++) {
      const c = code[i]
      if (c === '(' || c === '[' || c === '<') depth++
      else if (c === ')' || c === ']' || (c === '>' && code[i - 1] !== '-')) depth--
      else if (depth <= 0 && (c === '{' || c === ';')) break
    }
    if (code[i] !== '{') continue
    found.push({ name: match[1], first: lineOf(code, match.index), last: lineOf(code, closing(code, i)) })
  }
  return found
}

/** The code without its `#[cfg(test)]` modules. */
function withoutTests(code) {
  let out = code
  for (;;) {
    const match = /#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{/.exec(out)
    if (!match) return out
    const open = match.index + match[0].length - 1
    out = out.slice(0, match.index) + out.slice(closing(out, open) + 1)
  }
}

const problems = []
let measured = 0
for (const crate of readdirSync(path.join(repo, 'crates'))) {
  const src = path.join(repo, 'crates', crate, 'src')
  for (const file of sources(src)) {
    const relative = path.relative(repo, file)
    const text = readFileSync(file, 'utf8')
    const code = blank(text)
    const lines = text.split('\n').length - (text.endsWith('\n') ? 1 : 0)
    if (lines > MAX_FILE_LINES) problems.push(`${relative}: ${lines} lines (at most ${MAX_FILE_LINES})`)
    for (const fn of functions(code)) {
      measured++
      const length = fn.last - fn.first + 1
      if (list) console.log(`${length}\t${relative}:${fn.first}\t${fn.name}`)
      if (length > MAX_FUNCTION_LINES) problems.push(`${relative}:${fn.first}: fn ${fn.name} has ${length} lines (at most ${MAX_FUNCTION_LINES})`)
    }
    if (crate !== 'core') continue
    const module = path.relative(src, file).split(path.sep)[0].replace(/\.rs$/, '')
    if (module === 'lib') continue
    if (!(module in FLOORS)) {
      problems.push(`${relative}: module ${module} has no floor in tools/check-rust.mjs (and ARCHITECTURE.md)`)
      continue
    }
    for (const [, target] of withoutTests(code).matchAll(/\bcrate::([a-z_]\w*)/g)) {
      if (target === module) continue
      if (!(target in FLOORS)) problems.push(`${relative}: imports crate::${target}, which has no floor`)
      else if (FLOORS[target] >= FLOORS[module]) {
        problems.push(`${relative}: ${module} (floor ${FLOORS[module]}) imports ${target} (floor ${FLOORS[target]})`)
      }
    }
  }
}
for (const problem of [...new Set(problems)]) console.error(`check-rust: ${problem}`)
if (problems.length > 0) process.exit(1)
console.log(`check-rust: ${measured} functions: every import goes down a floor, no file over ${MAX_FILE_LINES} lines, no function over ${MAX_FUNCTION_LINES}`)
