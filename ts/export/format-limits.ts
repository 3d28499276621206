/**
 * The routed experts a format can be written for as ModelOpt 0.47 writes it: stacked experts only in the formats it
 * exports them in, and for `fp8_pb_wo` (128×128 block FP8) the widths whose tiles it places on each projection's own
 * rows.
 */
import { MoeQuantError } from '../errors'
import { FORMATS, FP8_TILE, type QuantFormatName } from '../formats'
import type { MoeLayer } from '../model/resolve'

/**
 * Refuses experts `format` cannot be written for (`tensor` names them in the error).
 * @throws MoeQuantError `E_MODEL_UNSUPPORTED`
 */
export function checkExpertsForFormat(layer: MoeLayer, format: QuantFormatName, output: 'fused' | 'per_expert', tensor: string): void {
  if (output === 'fused' && !FORMATS[format].stackedExperts) {
    const stacked = Object.keys(FORMATS).filter((name) => FORMATS[name as QuantFormatName].stackedExperts).map((name) => `'${name}'`)
    throw new MoeQuantError(
      'E_MODEL_UNSUPPORTED',
      `${tensor}: format '${format}' is not written for experts kept stacked, as ${layer.block}'s are: ModelOpt 0.47 does not export them in it (use ${stacked.join(', ')})`,
      { tensor },
    )
  }
  if (format === 'fp8_pb_wo') checkTiledExperts(layer, tensor)
}

/**
 * The routed experts `fp8_pb_wo` can be written for as ModelOpt 0.47 writes them. Its tiles lie over each expert's
 * fused gate/up `[2I, H]`: split back into gate and up, they are each projection's own tiles only where I is a
 * multiple of 128 (or the fused weight is one tile, whose amax gate and up then share). For other widths ModelOpt
 * gives a projection the maxima of the other's rows, or stops.
 * @throws MoeQuantError `E_MODEL_UNSUPPORTED`
 */
function checkTiledExperts(layer: MoeLayer, tensor: string): void {
  const { hidden, intermediate } = layer
  const gated = layer.tensors.gate !== undefined || layer.tensors.gateUp !== undefined
  const oneTile = (gated ? 2 * intermediate : intermediate) <= FP8_TILE && hidden <= FP8_TILE
  const refuse = (why: string) => {
    throw new MoeQuantError('E_MODEL_UNSUPPORTED', `${tensor}: format 'fp8_pb_wo' ${why} (use 'fp8' or 'fp8_pc_pt')`, { tensor })
  }
  if (gated && !oneTile && intermediate % FP8_TILE !== 0) {
    refuse(
      `lays its ${FP8_TILE}×${FP8_TILE} tiles over each expert's fused gate/up [2I, H], and the experts of ${layer.block} have I = ${intermediate}, ` +
        `not a multiple of ${FP8_TILE}: ModelOpt 0.47 scales such gate and up projections with each other's maxima or stops`,
    )
  }
}
