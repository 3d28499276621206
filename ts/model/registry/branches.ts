/**
 * Declarations of Gemma 4's decoder (transformers models/gemma4): norms on both sides of each sublayer, a dense
 * MLP and the routed experts as two normed branches of one MoE layer with a router reading a scaled input, and an
 * attention whose head size, KV heads, values and rope depend on the layer type. Module names are relative to the
 * decoder layer.
 */

/** The four norms of a layer whose sublayers are normed on their input and their output. */
export interface SandwichNormsDecl {
  mixerInput: string
  mixerOutput: string
  mlpInput: string
  mlpOutput: string
}

/** A dense MLP beside the routed experts of each MoE layer, the two branches normed apart: the MLP reads the
 * layer's normed input and its output is normed by `mlpOutput`; the router reads the un-normed input, the experts
 * read it normed by `expertsInput`, and their output is normed by `expertsOutput`. */
export interface DenseBesideExpertsDecl {
  module: string
  expertsInput: string
  expertsOutput: string
  mlpOutput: string
}

/** The router reads `rmsnorm(x) · scale · hidden^-0.5` (a weightless RMSNorm) and multiplies each chosen expert's
 * renormalised weight by `perExpertScale[e]`; both tensors beside the router's weight, by their last name. */
export interface ScaledRouterDecl {
  scale: string
  perExpertScale: string
}

/**
 * Attention whose shape and rope depend on the layer type (`layer_types`): each type rotates with its own entry of
 * `rope_parameters` over its own head size; the layers of `wideType` take config `headDim` (with its class default)
 * as their head size and, when config `keysAsValues` is true, `kvHeads` KV heads (when set) and k's projection as
 * their values; config `per_layer_config` (what transformers 5.25 writes instead) overrides `head_dim` and
 * `num_key_value_heads` layer by layer.
 */
export interface LayerTypeAttentionDecl {
  wideType: string
  headDim: { key: string; default: number }
  kvHeads: string
  keysAsValues: string
  /** The config class's rope parameters of each layer type, when config.json has no `rope_parameters`. */
  ropeDefaults: Readonly<Record<string, Readonly<Record<string, number | string>>>>
  /** The config class makes the last layer of this type whatever `layer_types` says. */
  lastLayer: string
}

/** A config value the forward cannot take: `key` must be one of `allowed` (its class default applies), else the
 * family is refused naming `block`. */
export interface ConfigLimitDecl {
  key: string
  allowed: readonly (number | string | boolean | null)[]
  block: string
}
