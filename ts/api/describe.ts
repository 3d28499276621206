/**
 * describeModel(): the model descriptor the native forward is given, read from a checkpoint's headers.
 */
import { readListing, refuseQuantizedSource } from '../model/listing'
import { describeListing } from '../model/spec'
import type { ModelDescriptor } from '../native/contract'
import { checkDirectory } from './options'

export type { ModelDescriptor }

/**
 * Reads a checkpoint's headers and returns the descriptor the native forward is given.
 *
 * @param dir A Hugging Face model directory.
 * @throws MoeQuantError as inspectModel does, plus `E_LAYOUT_UNRECOGNISED` ("forward not supported for …")
 *   for families whose forward the descriptor cannot express (GPT-OSS, Llama 4 for now).
 * @example
 *   const descriptor = await describeModel('./Qwen3-30B-A3B')
 *   console.log(descriptor.layers[0].mlp.kind, descriptor.rope.theta)
 */
export async function describeModel(dir: string): Promise<ModelDescriptor> {
  const listing = await readListing(checkDirectory(dir, 'describeModel(dir)'))
  // A ModelOpt export is read dequantized (evaluateModel compares one with its original).
  refuseQuantizedSource(listing, { modelOpt: false })
  return describeListing(listing).descriptor
}
