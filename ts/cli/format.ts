/** Small text-formatting helpers for the CLI: tables, byte sizes, parameter counts. */

/** Renders rows as an aligned table with a header rule. */
export function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()
  return [line(header), widths.map((w) => '─'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

/** 1536 → "1.5 KiB". */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = n
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`
}

/** 30_532_122_624 → "30.53B". */
export function count(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`
  return String(n)
}

/** [0, 1, 2, 5] → "0-2, 5". */
export function ranges(values: readonly number[]): string {
  if (values.length === 0) return 'none'
  const parts: string[] = []
  let start = values[0] as number
  let prev = start
  for (const v of [...values.slice(1), Number.NaN]) {
    if (v === prev + 1) {
      prev = v
      continue
    }
    parts.push(start === prev ? String(start) : `${start}-${prev}`)
    start = v
    prev = v
  }
  return parts.join(', ')
}
