//! Scaled dot-product attention over whole sequences as one kernel (`attention.cu`): the scores stay on chip,
//! where the op-by-op path writes them, its softmax reads and rewrites them, and a second matmul reads them again.
//! The kernel keeps eager attention's rounding points (the product q·kᵀ and the probabilities rounded to the
//! compute dtype), so it computes what the op-by-op path computes but for the order of f32 sums (tested against
//! it in `tests/forward_kernels_cuda.rs`).

use candle_core::{DType, Tensor};

use super::{address, kernel_module, known_max, shape_error, to_u32, Arg, Grid, Module, Source};
use crate::error::Result;

const ATTENTION: Module = kernel_module!("attention");

/// Which keys each query sees: keys at or before it, and of those, with a window, the last `window` positions
/// (itself included), with chunks, those of its chunk of `size` positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMask {
    Causal,
    Window(usize),
    Chunks(usize),
}

/// The head sizes the kernel is built for.
const HEAD_DIMS: [usize; 2] = [64, 128];

/// Whether [`fused_attention`] takes these tensors: bf16 or f16 on a GPU, `q [B, H, T, D]` and `k`, `v`
/// `[B, KV, T, D]` (self-attention: as many keys as queries) with D 64 or 128 and H a multiple of KV.
pub fn fused_attention_fits(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    let (Ok((b, heads, t, d)), Ok(k_dims), Ok(v_dims)) = (q.dims4(), k.dims4(), v.dims4()) else {
        return false;
    };
    let kv = k_dims.1;
    q.device().is_cuda()
        && matches!(q.dtype(), DType::BF16 | DType::F16)
        && k.dtype() == q.dtype()
        && v.dtype() == q.dtype()
        && HEAD_DIMS.contains(&d)
        && k_dims == (b, kv, t, d)
        && v_dims == k_dims
        && kv > 0
        && heads.is_multiple_of(kv)
}

/// `softmax(T(q·kᵀ) · scaling + mask) · v` (see [`fused_attention_fits`] for the shapes), the probabilities in
/// the compute dtype T; with `sinks [H]` (f32), each row's softmax also counts its head's sink logit, whose share
/// is dropped. Query head h attends with kv head h / (H / KV). Returns `[B, H, T, D]` as a view of `[B, T, H, D]`
/// memory, the layout the output projection reads; its maximum |x| is recorded (see [`known_max`]).
pub fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scaling: f32,
    mask: KeyMask,
    sinks: Option<&Tensor>,
) -> Result<Tensor> {
    let op = "fused_attention";
    if !fused_attention_fits(q, k, v) {
        return Err(shape_error(
            q,
            &format!(
                "fused_attention expects bf16/f16 q [B, H, T, D] and k, v [B, KV, T, D] on a GPU with D in \
                 {HEAD_DIMS:?}; got k {:?}, v {:?}",
                k.dims(),
                v.dims()
            ),
        ));
    }
    let (b, heads, t, d) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    let (kind, span) = match mask {
        KeyMask::Causal => (0, 1),
        KeyMask::Window(window) if window > 0 => (1, window),
        KeyMask::Window(_) => {
            return Err(shape_error(q, "fused_attention: a sliding window of 0 keys leaves every query without keys"))
        }
        KeyMask::Chunks(size) => (2, size.max(1)),
    };
    let sinks = sinks.map(|sinks| sink_logits(sinks, q, heads)).transpose()?;
    let k = rows_aligned(k)?;
    let v = rows_aligned(v)?;
    let source = Source::new(q, op)?;
    let mut out = source.alloc(q.dtype(), b * heads * t * d)?;
    let mut amax = source.zeros(1)?;
    if b * heads * t > 0 {
        // Two tiles each of keys and values, 64 rows of D + 8 two-byte elements (attention.cu).
        let bytes = to_u32(4 * 64 * (d + 8) * 2, op)?;
        let grid = (to_u32(t.div_ceil(64), op)?, to_u32(heads, op)?, to_u32(b, op)?);
        let grid = Grid::Shared { grid, block: (128, 1, 1), bytes };
        let (k_address, v_address) = (address(&k)?, address(&v)?);
        // Without sinks the kernel never reads this pointer; k's is a valid stand-in.
        let sinks_address = sinks.as_ref().map(address).transpose()?.unwrap_or(k_address);
        let strides = |xs: &Tensor| {
            let stride = xs.stride();
            [stride[0] as u64, stride[1] as u64, stride[2] as u64]
        };
        let ([k_batch, k_head, k_row], [v_batch, v_head, v_row]) = (strides(&k), strides(&v));
        let mut args = [
            Arg::Out(&mut out),
            Arg::Out(&mut amax),
            Arg::U64(k_address),
            Arg::U64(v_address),
            Arg::U64(sinks_address),
            Arg::U32(to_u32(t, op)?),
            Arg::U32(to_u32(heads, op)?),
            Arg::U32(to_u32(kv_heads, op)?),
            Arg::U64(k_batch),
            Arg::U64(k_head),
            Arg::U64(k_row),
            Arg::U64(v_batch),
            Arg::U64(v_head),
            Arg::U64(v_row),
            Arg::F32(scaling),
            Arg::I32(kind),
            Arg::U32(to_u32(span, op)?),
            Arg::I32(i32::from(sinks.is_some())),
        ];
        source.launch(&ATTENTION, &format!("attention_{}_{d}", source.suffix()), grid, &mut args)?;
    }
    let out = source.tensor(out, (b, t, heads, d)).transpose(1, 2)?;
    known_max::offer(&out, source.tensor(amax, ()));
    Ok(out)
}

/// One f32 sink logit per head, on q's device.
fn sink_logits(sinks: &Tensor, q: &Tensor, heads: usize) -> Result<Tensor> {
    if sinks.elem_count() != heads {
        return Err(shape_error(sinks, &format!("fused_attention expects one sink logit per head ({heads})")));
    }
    Ok(sinks.to_device(q.device())?.to_dtype(DType::F32)?.flatten_all()?.contiguous()?)
}

/// `xs [B, KV, T, D]` as the kernel reads it: each row of D contiguous and every row, head and sequence starting
/// 16-byte aligned (a transposed projection's view as it lies); copied otherwise.
fn rows_aligned(xs: &Tensor) -> Result<Tensor> {
    let stride = xs.stride();
    let aligned = stride[3] == 1
        && stride[..3].iter().all(|s| s % 8 == 0)
        && (xs.layout().start_offset() * xs.dtype().size_in_bytes()).is_multiple_of(16);
    Ok(if aligned { xs.clone() } else { xs.force_contiguous()? })
}
