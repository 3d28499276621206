/**
 * DeepSeek sparse attention in the spec: which MLA layers run their own lightning indexer (on GLM-5 the `shared`
 * layers reuse the keys of the last layer that does), and each indexer's projections, checked against the shapes
 * config.json implies.
 */
import type { SparseAttentionDescriptor } from '../../native/contract'
import type { LayerTensors, SpecContext } from './context'

type IndexerType = 'full' | 'shared'
const INDEXER_TYPES: readonly unknown[] = ['full', 'shared']
const PATTERN_LETTERS: Readonly<Record<string, IndexerType>> = { F: 'full', S: 'shared' }

/** A list of at least `layers` indexer types (transformers reads the first `layers`), or undefined. */
function typeList(value: unknown, layers: number): IndexerType[] | undefined {
  const list = typeof value === 'string' ? [...value].map((c) => PATTERN_LETTERS[c]) : value
  if (!Array.isArray(list) || list.length < layers || !list.every((t) => INDEXER_TYPES.includes(t))) return undefined
  return (list as IndexerType[]).slice(0, layers)
}

/** GlmMoeDsaConfig's `indexer_types`: as given, else from `index_topk_pattern` (a string of F and S, or a list),
 * else every layer but those the `index_topk_freq` / `index_skip_topk_offset` schedule makes shared. */
function indexerTypes(context: SpecContext, raw: Record<string, unknown>, layers: number): IndexerType[] {
  const { values } = context
  const given = raw.indexer_types ?? null
  if (given !== null) {
    return typeList(given, layers) ?? values.invalid('indexer_types', `a list of ${layers} of "full" and "shared" (one per decoder layer)`, given)
  }
  const pattern = raw.index_topk_pattern ?? null
  if (pattern !== null) {
    return typeList(pattern, layers) ?? values.invalid('index_topk_pattern', `${layers} letters F or S, or a list of "full" and "shared"`, pattern)
  }
  const integer = (key: string, fallback: number): number => (values.has(key) ? values.integer(key, Number.MIN_SAFE_INTEGER) : fallback)
  const freq = Math.max(integer('index_topk_freq', 1), 1)
  const offset = integer('index_skip_topk_offset', 2)
  return Array.from({ length: layers }, (_, i) => (Math.max(i - offset + 1, 0) % freq === 0 ? 'full' : 'shared'))
}

/** Per decoder layer, whether its attention runs its own indexer (every layer unless the family shares keys
 * between layers). A first layer that would reuse the keys of an earlier one is a config error (transformers
 * stops: no earlier layer chose keys). */
export function indexerLayers(context: SpecContext, raw: Record<string, unknown>, layers: number): boolean[] {
  if (!context.forward.sparseAttention?.sharedLayers) return Array.from({ length: layers }, () => true)
  const types = indexerTypes(context, raw, layers)
  if (types[0] === 'shared') {
    const key = raw.indexer_types ? 'indexer_types' : raw.index_topk_pattern ? 'index_topk_pattern' : 'index_skip_topk_offset'
    context.values.invalid(key, 'a schedule whose first layer runs its indexer (a shared layer reuses the keys of an earlier one)', raw[key])
  }
  return types.map((type) => type === 'full')
}

/** The sparse attention of the MLA layer whose attention module is `attn`: the number of keys kept, and its
 * indexer unless it reuses the keys of an earlier layer (`ownIndexer` false). */
export function sparseAttention(
  context: SpecContext,
  tensors: LayerTensors,
  attn: string,
  dims: { qLora: number | null; rope: number },
  ownIndexer: boolean,
): SparseAttentionDescriptor {
  const { values, hidden } = context
  const topK = values.integer('index_topk')
  if (!ownIndexer) return { top_k: topK }
  // transformers builds q_a_proj whatever q_lora_rank says: the indexer's queries come from its latent.
  const qLora = dims.qLora
  if (qLora === null) return values.invalid('q_lora_rank', 'an integer ≥ 1 (the indexer reads the query latent)')
  const heads = values.integer('index_n_heads')
  const headDim = values.integer('index_head_dim')
  if (headDim < dims.rope) values.invalid('index_head_dim', `an integer ≥ qk_rope_head_dim (${dims.rope}), the dimensions its rope rotates`)
  const indexer = `${attn}.indexer`
  tensors.use(`${indexer}.wq_b.weight`, [heads * headDim, qLora], 'indexer.wq_b [index_n_heads·index_head_dim, q_lora_rank]')
  tensors.use(`${indexer}.wk.weight`, [headDim, hidden], 'indexer.wk [index_head_dim, hidden_size]')
  tensors.use(`${indexer}.k_norm.weight`, [headDim], 'indexer.k_norm [index_head_dim]')
  tensors.use(`${indexer}.k_norm.bias`, [headDim], 'indexer.k_norm bias [index_head_dim]')
  tensors.use(`${indexer}.weights_proj.weight`, [heads, hidden], 'indexer.weights_proj [index_n_heads, hidden_size]')
  return {
    top_k: topK,
    indexer: {
      wq_b: `${indexer}.wq_b`,
      wk: `${indexer}.wk`,
      weights_proj: `${indexer}.weights_proj`,
      k_norm: `${indexer}.k_norm.weight`,
      // nn.LayerNorm(index_head_dim, eps=1e-6), whatever the config says.
      k_norm_eps: 1e-6,
      num_heads: heads,
      head_dim: headDim,
      rope_dim: dims.rope,
      rope_interleaved: context.forward.sparseAttention?.indexerRopeAdjacentPairs === true,
    },
  }
}
