/**
 * The mixer of every decoder layer of a hybrid family (Mamba-2, Mamba, short convolution, attention, MoE or MLP),
 * read from config.json as its transformers config class reads it: the per-layer list (legacy spellings
 * remapped), else the legacy pattern string, else the class's default (a fixed list, or kinds derived from a
 * period).
 */
import { MoeQuantError } from '../errors'
import type { HybridDecl, HybridLayerKind, PeriodicLayerKinds } from './registry/types'

/**
 * The kind of each of the `layers` decoder layers.
 * @throws MoeQuantError `E_CONFIG_INVALID` for a list or pattern of another length or with an unknown kind
 */
export function hybridLayerKinds(decl: HybridDecl, raw: Record<string, unknown>, layers: number, file: string): HybridLayerKind[] {
  const invalid = (key: string, value: unknown): never => {
    const spellings = Object.keys(decl.kinds).map((k) => JSON.stringify(k)).join(', ')
    throw new MoeQuantError('E_CONFIG_INVALID', `${file}: "${key}" must give one of ${spellings} for each of the ${layers} layers, got ${JSON.stringify(value)}`, { file })
  }
  const read = (key: string, spelled: readonly unknown[]): HybridLayerKind[] => {
    const kinds = spelled.map((k) => (typeof k === 'string' && Object.hasOwn(decl.kinds, k) ? decl.kinds[k] : undefined))
    if (kinds.length !== layers || kinds.some((k) => k === undefined)) invalid(key, spelled)
    return kinds as HybridLayerKind[]
  }
  const listKey = decl.layerTypes.find((key) => raw[key] !== undefined && raw[key] !== null)
  if (listKey !== undefined) {
    const list = raw[listKey]
    return Array.isArray(list) ? read(listKey, list) : invalid(listKey, list)
  }
  const pattern = decl.patternKey === undefined ? undefined : raw[decl.patternKey]
  if (pattern !== undefined && pattern !== null) {
    return typeof pattern === 'string' ? read(decl.patternKey as string, [...pattern]) : invalid(decl.patternKey as string, pattern)
  }
  const fallback = decl.defaultLayerTypes
  if (typeof fallback === 'string') return Array.from({ length: layers }, () => fallback)
  if (!isList(fallback)) return periodicKinds(fallback, raw, layers, file)
  if (fallback.length !== layers) invalid(decl.layerTypes[0] as string, null)
  return [...fallback]
}

function isList(kinds: readonly HybridLayerKind[] | PeriodicLayerKinds): kinds is readonly HybridLayerKind[] {
  return Array.isArray(kinds)
}

/**
 * Kinds derived from a period, as the config class does (`atOffset` where `i % period == offset`), its
 * validation included (a positive period, an offset below it).
 * @throws MoeQuantError `E_CONFIG_INVALID`
 */
function periodicKinds(rule: PeriodicLayerKinds, raw: Record<string, unknown>, layers: number, file: string): HybridLayerKind[] {
  const read = ({ key, default: fallback }: { key?: string; default: number }): number => {
    if (key === undefined) return fallback
    const value = raw[key] ?? fallback
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
      throw new MoeQuantError('E_CONFIG_INVALID', `${file}: "${key}" must be an integer ≥ 0, got ${JSON.stringify(value)}`, { file })
    }
    return value
  }
  const period = read(rule.period)
  const offset = read(rule.offset)
  if (offset >= period) {
    throw new MoeQuantError('E_CONFIG_INVALID', `${file}: "${rule.offset.key ?? 'offset'}" (${offset}) must be smaller than "${rule.period.key ?? 'period'}" (${period})`, { file })
  }
  return Array.from({ length: layers }, (_, i) => (i % period === offset ? rule.atOffset : rule.elsewhere))
}
