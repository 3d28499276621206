/**
 * moe-quant: quantize Mixture-of-Experts checkpoints into NVIDIA ModelOpt's format.
 * Public API; see README.md for a tour.
 */
export { inspectModel, isQuantizedCheckpoint } from './api/inspect'
export type { FormatSupport, InspectOptions, InspectReport, PlanPreview } from './api/inspect'
export { expertTensorNames } from './model/resolve'
export type { MoeLayer } from './model/resolve'
export type { KeepReason } from './model/tensor-plan'
export type { ExpertLayoutKind, RouterKind, ArchitectureEntry } from './model/registry'
export { REGISTRY, lookupArchitecture } from './model/registry'
export { computeLogits } from './api/logits'
export { calibrateModel } from './api/calibrate'
export { quantizeModel } from './api/quantize'
export type { KvCacheMode, QuantFormatName, QuantizeOptions, QuantizeProgress, QuantizeResult, LayerError, Recipe } from './api/quantize'
export type { CalibrateOptions, CalibrationOptions, CalibrationProgress, CalibrationResult, ChatMessage, ExpertCoverage } from './api/calibrate'
export type { LogitsResult } from './api/logits'
export { evaluateModel } from './api/evaluate'
export type { EvaluateOptions, EvaluationProgress, EvaluationResult } from './api/evaluate'
export { describeModel } from './api/describe'
export type { ModelDescriptor } from './api/describe'
export { MoeQuantError, ERROR_CODES, NATIVE_ERROR_CODES } from './errors'
export type { ErrorCode } from './errors'
