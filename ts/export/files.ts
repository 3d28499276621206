/**
 * Which files of the input directory, besides the weights, go into the output: an allow-list of what
 * serving engines and transformers read next to a checkpoint (configs, tokenizer, chat template, processor
 * configs of multimodal models, code of remote-code models, README and licence). Anything else stays behind
 * and is listed: a stray `consolidated.safetensors` or `reference.safetensors` copied along would be loaded
 * as unquantized weights by an engine that globs `*.safetensors`.
 */

/** File names copied unchanged (config.json and hf_quant_config.json are written, not copied). */
const COPIED: readonly RegExp[] = [
  /^generation_config\.json$/,
  // Tokenizers: fast (tokenizer.json), slow (sentencepiece, BPE vocab/merges, tiktoken) and their configs.
  /^(tokenizer|tokenizer_config|special_tokens_map|added_tokens|vocab)\.json$/,
  /^(tokenizer\.model|spiece\.model|sentencepiece\.bpe\.model|vocab\.txt|merges\.txt)$/,
  /^[\w.-]+\.tiktoken$/,
  /^chat_template\.(jinja|json)$/,
  // Multimodal models: image, video and audio processors.
  /^(preprocessor|processor|video_preprocessor|image_processor|feature_extractor)_?config\.json$/,
  // Remote-code models (config.json's auto_map names these modules).
  /^(configuration|modeling|tokenization|processing|image_processing|video_processing|feature_extraction)_\w+\.py$/,
  /^(README|LICENSE|LICENCE|NOTICE|USE_POLICY)(\.\w+)?$/i,
]

export interface CopyPlan {
  /** Input files copied into the output unchanged. */
  copy: string[]
  /** Input files left behind, in name order. */
  skipped: string[]
}

/**
 * Splits the input's non-weight files (`others`, as the listing gives them) into those copied and those left
 * behind; `written` are the files the export writes itself.
 */
export function planCopies(others: readonly string[], written: readonly string[]): CopyPlan {
  const copy: string[] = []
  const skipped: string[] = []
  for (const file of others) {
    if (written.includes(file)) continue
    if (COPIED.some((pattern) => pattern.test(file))) copy.push(file)
    else skipped.push(file)
  }
  return { copy, skipped: skipped.sort() }
}
