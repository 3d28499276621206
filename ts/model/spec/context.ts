/**
 * What the parts of the model spec are built from: the family's registry entry and forward declaration,
 * config.json read with the family's defaults, and the checkpoint's tensors, each checked against the shape
 * the forward expects as soon as the spec names it.
 */
import { MoeQuantError } from '../../errors'
import { FORMAT_NAMES, FORMATS } from '../../formats'
import type { TensorHeader } from '../listing'
import type { ArchitectureEntry, ForwardDecl } from '../registry/types'
import type { ConfigValues } from './config-values'

/** A shape as messages write it: `[a, b]`. */
export const fmt = (shape: readonly number[]): string => `[${shape.join(', ')}]`

/** Refuses a family, or a feature of its forward, that the descriptor cannot express (in one line, with the
 * formats that need no forward). */
export function unsupported(entry: ArchitectureEntry | undefined, modelType: string, reason: string): never {
  const family = entry ? `${entry.family} (${modelType})` : modelType
  const weightOnly = FORMAT_NAMES.filter((f) => !FORMATS[f].calibrated).join(', ')
  throw new MoeQuantError('E_MODEL_UNSUPPORTED', `forward not supported for ${family}: ${reason} (the weight-only formats ${weightOnly} need no forward)`)
}

/** The checkpoint's tensors by name. */
export class CheckpointTensors {
  private readonly byName: Map<string, TensorHeader>

  constructor(readonly list: readonly TensorHeader[]) {
    this.byName = new Map(list.map((t) => [t.name, t]))
  }

  has(name: string): boolean {
    return this.byName.has(name)
  }

  get(name: string): TensorHeader | undefined {
    return this.byName.get(name)
  }

  /**
   * The tensor `name` (`what` describes it in messages), which must exist and, when `shape` is given, have it.
   * @throws MoeQuantError `E_LAYOUT_MISSING_TENSOR`, `E_LAYOUT_SHAPE`
   */
  expect(name: string, shape: readonly number[] | null, what: string): TensorHeader {
    const found = this.byName.get(name)
    if (!found) {
      throw new MoeQuantError('E_LAYOUT_MISSING_TENSOR', `${name} (${what}) is missing from the checkpoint`, { tensor: name })
    }
    if (shape && fmt(found.shape) !== fmt(shape)) {
      throw new MoeQuantError(
        'E_LAYOUT_SHAPE',
        `${name} is ${fmt(found.shape)}; ${what} should be ${fmt(shape)} according to config.json`,
        { tensor: name, shape: found.shape, file: found.file, expected: fmt(shape) },
      )
    }
    return found
  }
}

/**
 * The tensors one decoder layer's descriptor uses (and those it may leave unused), so that any other tensor of
 * the layer is refused instead of being silently left out of the forward.
 */
export class LayerTensors {
  readonly used = new Set<string>()
  readonly ignored = new Set<string>()

  constructor(private readonly tensors: CheckpointTensors) {}

  /** Checks `name` as CheckpointTensors.expect does, records it as used and returns it. */
  use(name: string, shape: readonly number[] | null, what: string): string {
    this.tensors.expect(name, shape, what)
    this.used.add(name)
    return name
  }

  has(name: string): boolean {
    return this.tensors.has(name)
  }

  get(name: string): TensorHeader | undefined {
    return this.tensors.get(name)
  }
}

/** What every part of the spec reads. */
export interface SpecContext {
  entry: ArchitectureEntry
  forward: ForwardDecl
  /** `model_type` of the text model, as config.json gives it. */
  modelType: string
  /** `hidden_size` of the text model. */
  hidden: number
  values: ConfigValues
  /** config.json, named in messages. */
  file: string
  tensors: CheckpointTensors
}

/** Refuses a feature of the model's forward that the descriptor cannot express yet. */
export const refuse = (context: SpecContext, reason: string): never => unsupported(context.entry, context.modelType, reason)

/** The key of `keys` config.json sets, else the last one (the config class's own name, with its default). */
export function pick(context: SpecContext, keys: readonly string[]): string {
  return keys.find((key) => context.values.has(key)) ?? (keys[keys.length - 1] as string)
}

/** A norm of the residual stream: its weight `[H]` (and, for LayerNorm families, its bias); the weight's name. */
export function hiddenNorm(context: SpecContext, tensors: LayerTensors | CheckpointTensors, module: string, what: string): string {
  const { hidden } = context
  const check = (name: string, description: string): void => {
    if (tensors instanceof LayerTensors) tensors.use(name, [hidden], description)
    else tensors.expect(name, [hidden], description)
  }
  check(`${module}.weight`, what)
  if (context.forward.layerNorm) check(`${module}.bias`, `${what} bias`)
  return `${module}.weight`
}
