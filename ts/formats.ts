/**
 * The quantization formats moe-quant writes, and every fact about them the TypeScript side uses: their ModelOpt
 * names, bits per weight, block size, and how a ModelOpt checkpoint stores a weight of each. The one table of
 * format facts in TypeScript; the bytes themselves are the native core's.
 */
import type { FormatName } from './native/contract'

/** Quantization formats (ModelOpt `quant_algo`: FP8, NVFP4, W4A16_NVFP4, FP8_PER_CHANNEL_PER_TOKEN, fp8_pb_wo, MXFP8, mxfp4, W4A16_AWQ, W4A8_AWQ, NVFP4_AWQ): the native core's `FormatName`. */
export type QuantFormatName = FormatName

/** What moe-quant knows of one format. */
export interface FormatFacts {
  /** ModelOpt's `quant_algo`, as hf_quant_config.json and config.json name the format. */
  quantAlgo: string
  /** Bits of one quantized element (`num_bits` of config.json's `quantization_config`). */
  bits: number
  /** Weights along the input dimension that share one scale (`group_size`); null for one scale per tensor. An
   * input dimension that is not a multiple of it cannot be quantized. */
  groupSize: number | null
  /** The safetensors dtype of a stored quantized weight. */
  weightDtype: string
  /** Quantized elements per stored byte: a weight `[N, K]` is stored `[N, K / weightsPerByte]` (packed along the
   * input dimension), or `[N / weightsPerByte, K]` where `packsRows` (INT4 packs two output rows a byte). */
  weightsPerByte: number
  packsRows: boolean
  /** A group-scaled weight carries a per-tensor `weight_scale_2` beside its group scales. */
  secondScale: boolean
  /** An AWQ search smooths the weights (`awq_lite`): each linear gets a `pre_quant_scale` (or its input norm absorbs
   * it), the calibration forward runs each layer twice, and hf_quant_config.json says `has_zero_point: false`,
   * `pre_quant_scale: true`. */
  awq: boolean
  /** The dtype of the per-group `weight_scale` beside a weight; null for a per-tensor scale of any dtype. A
   * group-scaled weight also has a per-tensor `weight_scale_2`. */
  groupScaleDtype: string | null
  /** The format needs a calibration forward of the model's family: activations quantized with a static
   * `input_scale` measured by it, or weights smoothed by an AWQ search over it (`awq`). Weight-only formats
   * (activations in 16 bits, or scaled per token at run time) need neither, so every detected model can take them. */
  calibrated: boolean
  /** The tensors config.json's `quantization_config.config_groups` describes, as ModelOpt 0.47 writes it:
   * weights and input activations, weights only, or no `config_groups` at all. */
  configGroups: 'weights_and_inputs' | 'weights' | 'none'
  /** What the weights carry beside `weight`: per-tensor scale(s), per-channel scale, both block scales, one scale
   * per 128×128 tile, or a power-of-two (E8M0) scale per 32 inputs. */
  weightScales: 'tensor' | 'channel' | 'block' | 'tile' | 'mx'
  /** hf_quant_config.json carries `group_size` (ModelOpt 0.47 writes it for NVFP4 and MXFP8, not for its `mxfp4`). */
  writesGroupSize: boolean
  /** Experts stored stacked on the hub (GPT-OSS, Llama 4) can be written stacked in this format, as ModelOpt does. */
  stackedExperts: boolean
  /** What the serving engines' ModelOpt loaders do not take of this format, for the run's warnings (null: they take
   * it all). */
  servingNote: string | null
  /** The linears that read one input (q/k/v, gate/up) share their weight amax: always (NVFP4's `weight_scale_2`),
   * or where the group's first weight is a single 128×128 tile (`fp8_pb_wo`, decided by the native core). */
  sharedWeightAmax: boolean
}

/**
 * Per-tensor E4M3; NVFP4's E2M1 with E4M3 scales for blocks of 16 weights and an f32 global scale; the same
 * NVFP4 weights with 16-bit activations; E4M3 with one scale per output channel, activations scaled per
 * token by the serving engine; E4M3 with one scale per 128×128 tile, activations in 16 bits; MXFP8 and MXFP4, E4M3
 * or E2M1 with a power-of-two scale per 32 weights of a row, activations MX-scaled by the engine; and INT4 with an f32
 * scale per 128 inputs, smoothed by an AWQ search, activations in 16 bits or FP8 with a static scale.
 */
/** Where ModelOpt's AWQ checkpoints are served. */
const AWQ_SERVING = "serving: ModelOpt's W4A16_AWQ, W4A8_AWQ and NVFP4_AWQ are TensorRT-LLM's formats; the ModelOpt loader of vLLM 0.34 does not take them"

export const FORMATS: Readonly<Record<QuantFormatName, FormatFacts>> = {
  fp8: { quantAlgo: 'FP8', bits: 8, groupSize: null, weightDtype: 'F8_E4M3', weightsPerByte: 1, packsRows: false, secondScale: false, awq: false, groupScaleDtype: null, calibrated: true, configGroups: 'weights_and_inputs', weightScales: 'tensor', writesGroupSize: false, stackedExperts: true, sharedWeightAmax: false, servingNote: null },
  nvfp4: { quantAlgo: 'NVFP4', bits: 4, groupSize: 16, weightDtype: 'U8', weightsPerByte: 2, packsRows: false, secondScale: true, awq: false, groupScaleDtype: 'F8_E4M3', calibrated: true, configGroups: 'weights_and_inputs', weightScales: 'block', writesGroupSize: true, stackedExperts: true, sharedWeightAmax: true, servingNote: null },
  w4a16_nvfp4: { quantAlgo: 'W4A16_NVFP4', bits: 4, groupSize: 16, weightDtype: 'U8', weightsPerByte: 2, packsRows: false, secondScale: true, awq: false, groupScaleDtype: 'F8_E4M3', calibrated: false, configGroups: 'weights', weightScales: 'block', writesGroupSize: true, stackedExperts: true, sharedWeightAmax: true, servingNote: null },
  fp8_pc_pt: { quantAlgo: 'FP8_PER_CHANNEL_PER_TOKEN', bits: 8, groupSize: null, weightDtype: 'F8_E4M3', weightsPerByte: 1, packsRows: false, secondScale: false, awq: false, groupScaleDtype: null, calibrated: false, configGroups: 'none', weightScales: 'channel', writesGroupSize: false, stackedExperts: true, sharedWeightAmax: false, servingNote: null },
  // ModelOpt 0.47 writes this quant_algo in lower case.
  fp8_pb_wo: { quantAlgo: 'fp8_pb_wo', bits: 8, groupSize: null, weightDtype: 'F8_E4M3', weightsPerByte: 1, packsRows: false, secondScale: false, awq: false, groupScaleDtype: null, calibrated: false, configGroups: 'none', weightScales: 'tile', writesGroupSize: false, stackedExperts: false, sharedWeightAmax: true, servingNote: "serving: vLLM 0.34 loads fp8_pb_wo linears whose input dimension is a multiple of 128, and MoE experts only with one FP8 scale each (exclude '*experts*' to serve this format there); SGLang 0.5.23 takes it only inside a MIXED_PRECISION checkpoint" },
  mxfp8: { quantAlgo: 'MXFP8', bits: 8, groupSize: 32, weightDtype: 'F8_E4M3', weightsPerByte: 1, packsRows: false, secondScale: false, awq: false, groupScaleDtype: null, calibrated: false, configGroups: 'none', weightScales: 'mx', writesGroupSize: true, stackedExperts: false, sharedWeightAmax: false, servingNote: null },
  // ModelOpt 0.47 writes this quant_algo in lower case, without a group_size.
  mxfp4: { quantAlgo: 'mxfp4', bits: 4, groupSize: 32, weightDtype: 'U8', weightsPerByte: 2, packsRows: false, secondScale: false, awq: false, groupScaleDtype: null, calibrated: false, configGroups: 'none', weightScales: 'mx', writesGroupSize: false, stackedExperts: false, sharedWeightAmax: false, servingNote: "serving: the ModelOpt loaders of vLLM 0.34 and SGLang 0.5.23 do not take ModelOpt's mxfp4 (their MXFP4 path reads GPT-OSS's own format)" },
  int4_awq: { quantAlgo: 'W4A16_AWQ', bits: 4, groupSize: 128, weightDtype: 'U8', weightsPerByte: 2, packsRows: true, secondScale: false, awq: true, groupScaleDtype: 'F32', calibrated: true, configGroups: 'none', weightScales: 'block', writesGroupSize: true, stackedExperts: false, sharedWeightAmax: false, servingNote: AWQ_SERVING },
  w4a8_awq: { quantAlgo: 'W4A8_AWQ', bits: 4, groupSize: 128, weightDtype: 'U8', weightsPerByte: 2, packsRows: true, secondScale: true, awq: true, groupScaleDtype: 'F32', calibrated: true, configGroups: 'none', weightScales: 'block', writesGroupSize: true, stackedExperts: false, sharedWeightAmax: true, servingNote: AWQ_SERVING },
  nvfp4_awq: { quantAlgo: 'NVFP4_AWQ', bits: 4, groupSize: 16, weightDtype: 'U8', weightsPerByte: 2, packsRows: false, secondScale: true, awq: true, groupScaleDtype: 'F8_E4M3', calibrated: true, configGroups: 'none', weightScales: 'block', writesGroupSize: true, stackedExperts: false, sharedWeightAmax: true, servingNote: AWQ_SERVING },
}

/** The side of `fp8_pb_wo`'s square tiles. */
export const FP8_TILE = 128

/** The format names, in the order messages list them. */
export const FORMAT_NAMES = Object.keys(FORMATS) as QuantFormatName[]

/** The scale tensors ModelOpt writes beside a quantized weight `M.weight`, as `M.<name>`. */
export const SCALE_TENSORS = ['weight_scale', 'weight_scale_2', 'input_scale', 'pre_quant_scale', 'k_scale', 'v_scale', 'weight_global_scale', 'input_global_scale'] as const
