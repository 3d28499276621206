//! Activation-aware weight quantization (AWQ), as ModelOpt 0.47's `awq_lite` finds it and its unified HF export
//! writes it (SPEC §4.8). For each linear, a per-input-channel smoothing `s` multiplies the weight's columns before
//! they are quantized and divides the input (`pre_quant_scale = 1/s`), so that the channels the activations
//! stress most lose the least to quantization:
//!
//! - `act_scale`: per channel, the mean over forward calls of each call's mean `|x|` (bf16 means);
//! - `weight_scale`: per channel, the mean over output rows of `|w| / (its block's max |w|)` (bf16 arithmetic);
//! - for `alpha` in 0, 0.1, …, 1: `s = clamp(act^alpha / (weight^(1−alpha) + tiny), 1e-4, 1e4)`,
//!   `s /= sqrt(max(s)·min(s))`; the search keeps the alpha whose quantized output is closest to the
//!   original (squared error summed over calls; ties to the smaller alpha) — see [`search`];
//! - `pre_quant_scale = bf16(1/s)` and the weight becomes `bf16(W · (1 / f32(1/s)))`.
//!
//! At export, linears reading one input (q/k/v, gate/up, every routed expert's projection of one kind) take the
//! mean of their `pre_quant_scale`s, each weight re-smoothed to it; where that input is a norm's output, the
//! norm's weight absorbs it and no `pre_quant_scale` is written.

pub mod search;

use half::bf16;

use crate::numerics::dtype::Dtype;
use crate::numerics::e4m3::round_to_dtype;

/// The alphas tried, as torch's `arange(0, 1.1, 0.1)` gives them in f32.
pub const ALPHAS: [f32; 11] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// Per input channel, the mean over output rows of `|w| / (block max |w| + tiny)`, in the arithmetic of the
/// weight's `dtype` (ModelOpt's `get_weight_scale`): `values` `[rows, cols]`, blocks of `block` along a row. The
/// column sums are taken in f32 in the order torch's CPU sum takes them ([`ColumnSums`]).
pub fn weight_scale(values: &[f32], [rows, cols]: [usize; 2], block: usize, dtype: Dtype) -> Vec<f32> {
    let round = |v: f32| round_to_dtype(v, dtype);
    let tiny = f32::MIN_POSITIVE; // torch.finfo(dtype).tiny for bf16 and f32 alike
    let mut sums = ColumnSums::new(cols, rows);
    let mut ratios = vec![0.0f32; cols];
    for row in values.chunks_exact(cols).take(rows) {
        for (start, chunk) in row.chunks(block).enumerate().map(|(b, c)| (b * block, c)) {
            let amax = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let divisor = round(amax + tiny);
            for (offset, v) in chunk.iter().enumerate() {
                ratios[start + offset] = round(v.abs() / divisor);
            }
        }
        sums.add_row(&ratios);
    }
    sums.finish().into_iter().map(|sum| round(sum / rows as f32)).collect()
}

/// Column sums of `rows` rows in f32, accumulated as torch's CPU sum over an outer dimension does (its cascade sum,
/// `multi_row_sum`): rows go into the first of four levels; every `2^p` rows (`p = max(4, ⌈log2 rows⌉ / 4)`) a level
/// is added into the next and cleared, climbing while the row count is a multiple of the next level's span; the
/// levels are added up at the end. Its rounding is what a bf16 mean of ModelOpt's rounds.
pub struct ColumnSums {
    levels: [Vec<f32>; 4],
    power: u32,
    rows: usize,
    seen: usize,
}

impl ColumnSums {
    pub fn new(cols: usize, rows: usize) -> Self {
        let power = 4.max(rows.max(1).next_power_of_two().trailing_zeros() / 4);
        ColumnSums { levels: std::array::from_fn(|_| vec![0.0; cols]), power, rows, seen: 0 }
    }

    pub fn add_row(&mut self, row: &[f32]) {
        self.levels[0].iter_mut().zip(row).for_each(|(acc, v)| *acc += v);
        self.seen += 1;
        let step = 1usize << self.power;
        // Levels climb only within the whole spans of the rows (the rest stays in the first level).
        if !self.seen.is_multiple_of(step) || self.seen > self.rows / step * step {
            return;
        }
        for level in 1..4 {
            let (below, above) = self.levels.split_at_mut(level);
            above[0].iter_mut().zip(below[level - 1].iter_mut()).for_each(|(acc, lower)| {
                *acc += *lower;
                *lower = 0.0;
            });
            let mask = (step - 1) << (level as u32 * self.power);
            if self.seen & mask != 0 {
                break;
            }
        }
    }

    pub fn finish(self) -> Vec<f32> {
        let [mut total, one, two, three] = self.levels;
        for level in [one, two, three] {
            total.iter_mut().zip(level).for_each(|(acc, v)| *acc += v);
        }
        total
    }
}

/// `x^e` as torch's `pow(tensor, scalar)` computes it for the exponents the search uses (0 and 1 exactly, 0.5 as
/// a square root).
fn pow(x: f32, e: f32) -> f32 {
    match e {
        0.0 => 1.0,
        1.0 => x,
        0.5 => x.sqrt(),
        _ => x.powf(e),
    }
}

/// The smoothing `s` for `alpha` (ModelOpt's `get_scale`), in f32.
pub fn smoothing(act_scale: &[f32], weight_scale: &[f32], alpha: f32) -> Vec<f32> {
    // `1 - alpha` is taken in double precision (alpha is a Python float), then used as an f32 exponent.
    let beta = (1.0f64 - f64::from(alpha)) as f32;
    let s: Vec<f32> = act_scale
        .iter()
        .zip(weight_scale)
        .map(|(&a, &w)| (pow(a, alpha) / (pow(w, beta) + f32::MIN_POSITIVE)).clamp(1e-4, 1e4))
        .collect();
    let max = s.iter().fold(f32::MIN, |m, &v| m.max(v));
    let min = s.iter().fold(f32::MAX, |m, &v| m.min(v));
    let norm = (max * min).sqrt();
    s.into_iter().map(|v| v / norm).collect()
}

/// The index in [`ALPHAS`] of the smallest loss, the first on ties.
pub fn best_alpha(losses: &[f64]) -> usize {
    let mut best = 0;
    for (i, &loss) in losses.iter().enumerate() {
        if loss < losses[best] {
            best = i;
        }
    }
    best
}

/// A linear's smoothing once searched: the f32 `1/s` (ModelOpt divides by this exact value), and its rounding to
/// the weight's dtype (the `pre_quant_scale` written). Every product below is rounded to the weight's dtype, as
/// ModelOpt computes in the model's (bf16 for a bf16 checkpoint).
#[derive(Debug, Clone, PartialEq)]
pub struct Smoothing {
    pub inverse: Vec<f32>,
}

impl Smoothing {
    /// From the searched `s`: `1/s` in f32.
    pub fn from_scale(scale: &[f32]) -> Self {
        Smoothing { inverse: scale.iter().map(|s| 1.0 / s).collect() }
    }

    /// The neutral smoothing of a linear the search could not run on (no calibration token): ones.
    pub fn neutral(cols: usize) -> Self {
        Smoothing { inverse: vec![1.0; cols] }
    }

    /// `pre_quant_scale` as written, in `dtype`.
    pub fn pre_quant_scale(&self, dtype: Dtype) -> Vec<f32> {
        self.inverse.iter().map(|&v| round_to_dtype(v, dtype)).collect()
    }

    /// The smoothed weight `dtype(W · (1 / inverse))`, columns scaled; `values` `[rows, cols]`.
    pub fn smooth(&self, values: &mut [f32], dtype: Dtype) {
        let factors: Vec<f32> = self.inverse.iter().map(|v| 1.0 / v).collect();
        for row in values.chunks_exact_mut(factors.len()) {
            for (w, f) in row.iter_mut().zip(&factors) {
                *w = round_to_dtype(*w * f, dtype);
            }
        }
    }
}

/// The input amax W4A8 scales a linear's activations by once smoothed: per channel, the input maximum (in
/// `dtype`) times the f32 `1/s`, the largest rounded to `dtype` (ModelOpt computes it from each linear's own
/// smoothing, before a group averages them; the group then takes its largest).
pub fn smoothed_input_amax(channel_amax: &[f32], smoothing: &Smoothing, dtype: Dtype) -> f32 {
    let amax =
        channel_amax.iter().zip(&smoothing.inverse).fold(0.0f32, |m, (a, p)| m.max(round_to_dtype(*a, dtype) * p));
    round_to_dtype(amax, dtype)
}

/// The mean of several linears' `pre_quant_scale`s (torch's mean of the stack in `dtype`: summed in f32 in order,
/// divided in f32, rounded to `dtype`).
pub fn average(scales: &[&[f32]], dtype: Dtype) -> Vec<f32> {
    let cols = scales.first().map_or(0, |s| s.len());
    let mean = |c: usize| scales.iter().map(|s| s[c]).fold(0.0f32, |acc, v| acc + v) / scales.len() as f32;
    (0..cols).map(|c| round_to_dtype(mean(c), dtype)).collect()
}

/// Re-smooths a weight from its `pre_quant_scale` `old` to the group's `new`: `dtype(W · old / new)` in f32, left
/// to right; unchanged when the two are equal (as ModelOpt skips it).
pub fn resmooth(values: &mut [f32], old: &[f32], new: &[f32], dtype: Dtype) {
    if old == new {
        return;
    }
    for row in values.chunks_exact_mut(old.len()) {
        for ((w, o), n) in row.iter_mut().zip(old).zip(new) {
            *w = round_to_dtype(*w * o / n, dtype);
        }
    }
}

/// A norm weight (stored in `dtype`) that absorbs `pre_quant_scale`: `w · pqs`; for norms that scale by `1 + w`
/// (Gemma's), `(w + 1) · pqs − 1`, each step rounded to `dtype`.
pub fn fold_into_norm(weight: &mut [f32], pre_quant_scale: &[f32], offset: bool, dtype: Dtype) {
    let round = |v: f32| round_to_dtype(v, dtype);
    for (w, p) in weight.iter_mut().zip(pre_quant_scale) {
        *w = if offset { round(round(round(*w + 1.0) * p) - 1.0) } else { round(*w * p) };
    }
}

/// f32 values as little-endian bytes of `dtype` (BF16, F16 or F32; values already of that dtype are exact).
pub fn dtype_bytes(values: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
        Dtype::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphas_are_torch_arange_in_f32() {
        for (i, alpha) in ALPHAS.iter().enumerate() {
            // torch computes start + i·step in double, then rounds to f32.
            assert_eq!(*alpha, (i as f64 * 0.1) as f32, "{i}");
        }
    }

    #[test]
    fn weight_scale_by_hand() {
        // One row of two blocks of 2: |w| / block max, then the mean over rows (here two rows).
        let values = [1.0, -0.5, 0.25, 2.0, 0.5, 0.5, -1.0, 4.0];
        let scale = weight_scale(&values, [2, 4], 2, Dtype::BF16);
        assert_eq!(scale, [1.0, 0.75, 0.1875, 1.0]);
    }

    #[test]
    fn column_sums_follow_torchs_cascade() {
        // A 1, then 40 rows of 2^-24, in levels of 16 rows: the first 16 rows sum to 1 (each small value added to 1
        // alone rounds away) and go up at row 16; rows 17..32 sum exactly to 2^-20 and go up at row 32, onto the 1;
        // the last 9 stay below and take the upper level at the end.
        let small = 2f32.powi(-24);
        let mut sums = ColumnSums::new(1, 41);
        sums.add_row(&[1.0]);
        (0..40).for_each(|_| sums.add_row(&[small]));
        let upper = 1.0f32 + 16.0 * small;
        assert_eq!(sums.finish(), [9.0 * small + upper]);
        let mut sequential = 1.0f32;
        (0..40).for_each(|_| sequential += 2f32.powi(-24));
        assert_eq!(sequential, 1.0, "summed one by one, the small values vanish");
    }

    #[test]
    fn smoothing_by_hand_and_special_exponents() {
        let act = [4.0f32, 1.0];
        let weight = [1.0f32, 0.25];
        // alpha 1: s = act, normalised by sqrt(4·1) = 2.
        assert_eq!(smoothing(&act, &weight, 1.0), [2.0, 0.5]);
        // alpha 0: s = 1/weight = [1, 4], normalised by 2.
        assert_eq!(smoothing(&act, &weight, 0.0), [0.5, 2.0]);
        // alpha 0.5: sqrt(act)/sqrt(weight) = [2, 2], normalised by 2.
        assert_eq!(smoothing(&act, &weight, 0.5), [1.0, 1.0]);
        // Clamped to [1e-4, 1e4] before normalising.
        let s = smoothing(&[1e9, 1.0], &[1.0, 1.0], 1.0);
        assert_eq!(s, [1e4 / 100.0, 1.0 / 100.0]);
    }

    #[test]
    fn best_alpha_takes_the_first_minimum() {
        assert_eq!(best_alpha(&[3.0, 1.0, 1.0, 2.0]), 1);
        assert_eq!(best_alpha(&[1.0, 1.0]), 0);
    }

    #[test]
    fn smoothing_weights_averaging_and_norms() {
        let bf16 = Dtype::BF16;
        let smoothing = Smoothing::from_scale(&[2.0, 0.5]);
        assert_eq!(smoothing.pre_quant_scale(bf16), [0.5, 2.0]);
        let mut w = vec![1.0, 1.0, 3.0, -3.0];
        smoothing.smooth(&mut w, bf16);
        assert_eq!(w, [2.0, 0.5, 6.0, -1.5]);
        let avg = average(&[&[0.5, 2.0], &[1.5, 1.0]], bf16);
        assert_eq!(avg, [1.0, 1.5]);
        resmooth(&mut w, &[0.5, 2.0], &avg, bf16);
        assert_eq!(w, [1.0, round_to_dtype(0.5 * 2.0 / 1.5, bf16), 3.0, -2.0]);
        let mut norm = vec![1.5, 0.5];
        fold_into_norm(&mut norm, &avg, false, bf16);
        assert_eq!(norm, [1.5, 0.75]);
        let mut gemma = vec![0.5, -0.5];
        fold_into_norm(&mut gemma, &avg, true, bf16);
        assert_eq!(gemma, [0.5, -0.25]);
        // In f32 nothing is rounded: 1/3 stays 1/3 in f32.
        let mut f32_weight = vec![1.0f32];
        resmooth(&mut f32_weight, &[1.0], &[3.0], Dtype::F32);
        assert_eq!(f32_weight, [1.0f32 / 3.0]);
        assert_eq!(dtype_bytes(&[1.0], bf16), [0x80, 0x3f]);
        assert_eq!(dtype_bytes(&[1.0], Dtype::F32), 1.0f32.to_le_bytes());
        let input = smoothed_input_amax(&[2.0, 1.0], &Smoothing::from_scale(&[0.5, 4.0]), bf16);
        assert_eq!(input, 4.0);
    }
}
