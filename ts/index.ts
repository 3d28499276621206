/**
 * moe-quant: quantize Mixture-of-Experts checkpoints into NVIDIA ModelOpt's format.
 * Public API; see README.md for a tour.
 */
export { inspectModel, expertTensorNames } from './inspect'
export type { InspectReport } from './inspect'
export type { MoeLayer } from './resolve'
export type { KeepReason } from './plan'
export type { ExpertLayoutKind, RouterKind, ArchitectureEntry } from './registry'
export { REGISTRY, lookupArchitecture } from './registry'
export { computeLogits } from './forward'
export { calibrateModel } from './calibrate'
export { quantizeModel } from './quantize'
export type { QuantFormatName, QuantizeOptions, QuantizeProgress, QuantizeResult, LayerError } from './quantize'
export type { CalibrateOptions, CalibrationOptions, CalibrationProgress, CalibrationResult, ChatMessage, ExpertCoverage } from './calibrate'
export type { LogitsResult } from './forward'
export { evaluateModel } from './evaluate'
export type { EvaluateOptions, EvaluationProgress, EvaluationResult } from './evaluate'
export { isQuantizedCheckpoint } from './quantized'
export { describeModel } from './descriptor'
export type { ModelDescriptor } from './descriptor'
export { MoeQuantError, ERROR_CODES, NATIVE_ERROR_CODES } from './errors'
export type { ErrorCode } from './errors'
