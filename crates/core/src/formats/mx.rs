//! What the two MX formats share (MXFP8 and MXFP4: ModelOpt's `MXFP8QTensor` and `MXFP4QTensor`): blocks of 32
//! along K, each with one E8M0 scale, a power of two stored as its exponent biased by 127.

use crate::checkpoint::{Dtype, TensorView};
use crate::error::{Error, Result};
use crate::formats::{shape_error, WeightInput};

/// Elements along K sharing one E8M0 scale.
pub const MX_BLOCK: usize = 32;

/// ⌈log2(amax / max)⌉ with the quotient and the logarithm in f32, as torch takes them (its f32 `log2` rounds a
/// quotient just above a power of two down onto it; the f32 rounding of the exact logarithm does the same); `None`
/// for a zero amax.
pub fn exponent_above(amax: f32, max: f32) -> Option<i32> {
    let quotient = amax / max;
    (quotient > 0.0).then(|| (f64::from(quotient).log2() as f32).ceil() as i32)
}

/// 2^(biased − 127) as f32 (2^−127 is a subnormal, exact).
pub fn power_of_two(biased: i32) -> f32 {
    2f64.powi(biased - 127) as f32
}

/// `E_TENSOR_SHAPE` unless the weight's K is a multiple of 32 (ModelOpt's export asserts it and writes nothing).
pub fn check_blocks(weight: &WeightInput, format: &str) -> Result<()> {
    let [_, cols] = weight.shape;
    if cols % MX_BLOCK == 0 {
        return Ok(());
    }
    Err(Error::ShapeInvalid {
        tensor: weight.name.to_string(),
        shape: weight.shape.to_vec(),
        message: format!(
            "{format} scales blocks of {MX_BLOCK} along the input dimension, and K = {cols} is not a multiple of \
             {MX_BLOCK}; leave this tensor unquantized"
        ),
    })
}

/// Checks a stored weight's E8M0 scales: U8 `[rows, cols / 32]`, `cols` a multiple of 32.
pub fn check_scales(name: &str, [rows, cols]: [usize; 2], scale: &TensorView<'_>) -> Result<()> {
    if cols % MX_BLOCK != 0 || scale.shape != [rows, cols / MX_BLOCK] || scale.dtype != Dtype::U8 {
        return Err(shape_error(
            scale.name,
            scale.shape,
            format!("expected U8 [{rows}, {}] for {name}", cols / MX_BLOCK),
        ));
    }
    Ok(())
}
