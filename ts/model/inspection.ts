/**
 * The inspect report: what a checkpoint is and what a quantization would do to it (architecture, expert
 * layout per MoE layer, parameter counts, the tensors quantized and kept), built from its header listing alone.
 */
import * as path from 'node:path'

import { MoeQuantError } from '../errors'
import { parseConfig } from './config'
import { detectLayers, findLayerPrefix } from './detect'
import type { HeaderListing, TensorHeader } from './listing'
import { expertTensorNames, type MoeLayer, resolveModel } from './resolve'
import { type KeepReason, planTensors } from './tensor-plan'

export interface InspectReport {
  /** The checkpoint directory as given. */
  dir: string
  /** `model_type` of the text model. */
  modelType: string
  /** Family name from the registry, or `<model_type> (generic)`. */
  family: string
  /** `registry` when an explicit entry handles the model, `generic` when only its structure matched. */
  architecture: 'registry' | 'generic'
  /** Remarks worth showing to the user (generic handling, nested text config …). */
  notes: string[]
  /** `quant_algo` of a checkpoint already quantized in ModelOpt's format (`"NVFP4"`, `"FP8"` …), else null. */
  quantization: string | null
  numLayers: number
  hiddenSize: number
  vocabSize: number | null
  /** The floating-point dtype holding most of the weight bytes. */
  dtype: string
  files: Array<{ name: string; bytes: number }>
  /** Total size of the weight files in bytes. */
  sizeBytes: number
  parameters: {
    total: number
    /** Parameters of the routed experts (all layers, all experts). */
    experts: number
    /** Parameters one token uses: everything but the routed experts, plus K of E experts per MoE layer. */
    activePerToken: number
  }
  moeLayers: MoeLayer[]
  /** Decoder layers without routed experts. */
  denseLayers: number[]
  tensors: {
    /** Names of the tensors a quantization would quantize. */
    quantize: string[]
    /** Tensors kept in their source dtype, with the reason. */
    keep: Array<{ name: string; reason: KeepReason }>
  }
}

const numel = (tensor: TensorHeader): number => tensor.shape.reduce((a, b) => a * b, 1)

/** Builds the report from a header listing (no I/O). */
export function reportFromListing(listing: HeaderListing): InspectReport {
  const configFile = path.join(listing.dir, 'config.json')
  const config = parseConfig(listing.config, configFile)
  const layersPrefix = findLayerPrefix(listing.tensors)
  const layers = detectLayers(listing.tensors, config)
  const resolved = resolveModel(config, layers)
  const plan = planTensors(listing.tensors, layers, layersPrefix)

  const byName = new Map(listing.tensors.map((t) => [t.name, t]))
  let total = 0
  for (const tensor of listing.tensors) total += numel(tensor)
  let experts = 0
  let activeExperts = 0
  for (const layer of resolved.moeLayers) {
    let layerParams = 0
    for (const name of expertTensorNames(layer)) {
      const tensor = byName.get(name)
      if (!tensor) throw new MoeQuantError('E_LAYOUT_MISSING_TENSOR', `${name} is missing`, { tensor: name })
      layerParams += numel(tensor)
    }
    experts += layerParams
    activeExperts += (layerParams * layer.topK) / layer.experts
  }
  const bytesByDtype = new Map<string, number>()
  for (const tensor of listing.tensors) bytesByDtype.set(tensor.dtype, (bytesByDtype.get(tensor.dtype) ?? 0) + tensor.bytes)
  const dtype = [...bytesByDtype.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? 'unknown'

  const notes: string[] = []
  if (resolved.source === 'generic') {
    notes.push(`model_type "${config.modelType}" has no registry entry; its experts were recognised by structure alone (router kind guessed as ${resolved.moeLayers[0]?.router})`)
  }
  if (config.nested) notes.push(`text model nested under text_config (model_type ${config.outerModelType})`)
  const quantization = listing.quantization ?? null
  for (const stored of listing.dequantized ?? []) {
    const many = stored.count === 1 ? 'tensor' : 'tensors'
    notes.push(`stored as ${stored.form} (dequantized to ${stored.dtype.toLowerCase()} on read, as transformers does): ${stored.count} ${many}, e.g. ${stored.example}`)
  }
  if (quantization) {
    const producer = quantization.producer?.name ? ` by ${quantization.producer.name} ${quantization.producer.version ?? ''}`.trimEnd() : ''
    notes.push(`already quantized: ${quantization.algo}${producer} (${quantization.declaredIn}); shapes are the dequantized ones, ${listing.scales?.length ?? 0} scale tensors not counted`)
  }
  return {
    dir: listing.dir,
    modelType: config.modelType,
    family: resolved.family,
    architecture: resolved.source,
    notes,
    quantization: quantization?.algo ?? null,
    numLayers: config.numLayers,
    hiddenSize: config.hiddenSize,
    vocabSize: config.vocabSize ?? null,
    dtype,
    files: listing.files.map(([name, bytes]) => ({ name, bytes })),
    sizeBytes: listing.files.reduce((sum, [, bytes]) => sum + bytes, 0),
    parameters: { total, experts, activePerToken: Math.round(total - experts + activeExperts) },
    moeLayers: resolved.moeLayers,
    denseLayers: resolved.denseLayers,
    tensors: {
      quantize: plan.quantize.map((t) => t.name),
      keep: plan.keep.map(({ tensor, reason }) => ({ name: tensor.name, reason })),
    },
  }
}
