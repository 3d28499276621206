/** The version of this package, from its package.json ('unknown' if it cannot be read). */
import { readFileSync } from 'node:fs'
import * as path from 'node:path'

export function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version
  } catch {
    return 'unknown'
  }
}
