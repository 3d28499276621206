//! The AWQ search over the calibration forward, in two passes over each decoder layer: the first
//! ([`Phase::Statistics`]) records, per linear, the sum over calls of each call's per-channel mean `|x|` and the
//! per-channel max `|x|`; the second ([`Phase::Search`]) runs the same batches again and, for each linear and each
//! alpha, measures how far the output of the smoothed, INT4-quantized weight falls from the original one.
//! A call is one batch through the linear (a routed expert: the batch's tokens routed to it; none, no call).
//!
//! Statistics stay on the device until the layer ends. Split over devices (data parallel), each device records its
//! share of the batches and the shares merge in batch order into what one device records: a later share keeps its
//! per-call terms ([`AwqSearch::keeping_calls`]), which the merge adds one by one where one run adds them.
//!
//! The search runs in f32 whatever the forward's dtype, with the bf16 roundings ModelOpt's bf16 search makes (the
//! smoothed input and weight, the fake-quantized weight).

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{DType, Device, Tensor, D};

use super::{best_alpha, smoothing, weight_scale, Smoothing, ALPHAS};
use crate::error::{Error, Result};
use crate::formats::AwqQuantizer;
use crate::numerics::dtype::Dtype;
use crate::numerics::e4m3::{e4m3_to_f32, f32_to_e4m3};

/// Which pass a layer's forward is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Statistics,
    Search,
}

/// A sum of per-call tensors, in call order: a running total, and the terms a later share of the calls keeps
/// for the merge to add one by one (f32 addition is not associative: two partial sums added differ from one
/// running sum in the last bits).
#[derive(Debug, Clone, Default)]
struct OrderedSum {
    total: Option<Tensor>,
    terms: Vec<Tensor>,
}

impl OrderedSum {
    /// Adds one call's term (kept apart when `keep`).
    fn add(&mut self, term: Tensor, keep: bool) -> Result<()> {
        if keep {
            self.terms.push(term);
            return Ok(());
        }
        self.total = Some(match self.total.take() {
            Some(total) => (&total + term.to_device(total.device())?)?,
            None => term,
        });
        Ok(())
    }

    /// Adds what the calls after ours summed: their total (exact only when ours is empty), then their terms.
    fn extend(&mut self, later: OrderedSum, keep: bool) -> Result<()> {
        later.total.into_iter().chain(later.terms).try_for_each(|term| self.add(term, keep))
    }

    /// The sum over every call, in order (None without calls).
    fn sum(&self) -> Result<Option<Tensor>> {
        let mut all = OrderedSum { total: self.total.clone(), terms: Vec::new() };
        self.terms.iter().try_for_each(|term| all.add(term.clone(), false))?;
        Ok(all.total)
    }

    /// The same sum on `device`.
    fn to_device(&self, device: &Device) -> Result<OrderedSum> {
        let move_to = |t: &Tensor| t.to_device(device);
        Ok(OrderedSum {
            total: self.total.as_ref().map(move_to).transpose()?,
            terms: self.terms.iter().map(move_to).collect::<candle_core::Result<_>>()?,
        })
    }
}

/// What one linear accumulates over the calibration.
#[derive(Debug, Clone)]
pub struct Record {
    /// Σ over calls of bf16(mean |x| per channel), f32 `[cols]`.
    act: OrderedSum,
    /// max |x| per channel, f32 `[cols]`.
    channel_amax: Tensor,
    calls: usize,
    /// Once the statistics pass ends: act_scale and the weight's per-channel scale, on the host.
    scales: Option<(Vec<f32>, Vec<f32>)>,
    /// Σ over search calls of each alpha's mean squared error, f32 `[alphas]`.
    losses: OrderedSum,
    searched: usize,
}

/// One linear's search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Searched {
    pub smoothing: Smoothing,
    /// The alpha kept (None: the search saw no call, the smoothing is neutral).
    pub alpha: Option<f32>,
    /// max |x| per channel over the calibration (W4A8's input scale is made from it).
    pub channel_amax: Vec<f32>,
}

/// The AWQ search of one decoder layer's linears.
#[derive(Debug, Clone)]
pub struct AwqSearch {
    /// The weight quantizer the search fake-quantizes with.
    pub quantizer: AwqQuantizer,
    /// The dtype the weights are stored in (the search's roundings are ModelOpt's in the model's dtype).
    pub dtype: Dtype,
    pub phase: Phase,
    /// The linears searched, by module name (the forward hands each call's weight as it runs it).
    modules: BTreeSet<String>,
    /// The MoE blocks whose routed experts are searched (each expert's projections alone, see [`expert_key`]).
    blocks: BTreeSet<String>,
    records: BTreeMap<String, Record>,
    /// Whether each call's terms are kept apart for a merge after an earlier share's (see [`OrderedSum`]).
    keep_calls: bool,
}

/// The name a routed expert's projection (`gate`, `up` or `down`) is searched under.
pub fn expert_key(block: &str, expert: usize, projection: &str) -> String {
    format!("{block}.experts.{expert}.{projection}")
}

impl AwqSearch {
    pub fn new(quantizer: AwqQuantizer, dtype: Dtype, modules: BTreeSet<String>, blocks: BTreeSet<String>) -> Self {
        let records = BTreeMap::new();
        AwqSearch { quantizer, dtype, phase: Phase::Statistics, modules, blocks, records, keep_calls: false }
    }

    /// The search of a share of the batches that comes after another's (data parallel: every device after the
    /// first): it keeps each call's terms, so that [`merge`](Self::merge) reproduces one run's sums bit for bit.
    pub fn keeping_calls(mut self) -> Self {
        self.keep_calls = true;
        self
    }

    /// The search pass of one device's share of the batches, from these statistics (every share's, merged) with
    /// their tensors moved to `device`; `keep_calls` as [`keeping_calls`](Self::keeping_calls) for every device after
    /// the first. Each device then searches its own share from the same statistics.
    pub fn search_share(&self, device: &Device, keep_calls: bool) -> Result<AwqSearch> {
        if self.phase != Phase::Statistics {
            return Err(Error::internal("AWQ: a search pass starts from statistics, not from another search"));
        }
        let records = self
            .records
            .iter()
            .map(|(module, record)| {
                let moved = Record {
                    act: record.act.to_device(device)?,
                    channel_amax: record.channel_amax.to_device(device)?,
                    calls: record.calls,
                    scales: record.scales.clone(),
                    losses: OrderedSum::default(),
                    searched: 0,
                };
                Ok((module.clone(), moved))
            })
            .collect::<Result<_>>()?;
        let (modules, blocks) = (self.modules.clone(), self.blocks.clone());
        let (quantizer, dtype, phase) = (self.quantizer, self.dtype, Phase::Search);
        Ok(AwqSearch { quantizer, dtype, phase, modules, blocks, records, keep_calls })
    }

    /// Records a call of linear `module` (weight `[out, cols]` as the forward runs it) on `xs`, when it is one of the
    /// searched linears.
    pub fn record_linear(&mut self, module: &str, xs: &Tensor, weight: &Tensor) -> Result<()> {
        match self.modules.contains(module) {
            true => self.record(module, xs, weight),
            false => Ok(()),
        }
    }

    /// Whether the routed experts of MoE block `block` are searched.
    pub fn searches_experts(&self, block: &str) -> bool {
        self.blocks.contains(block)
    }

    /// Records one call of linear `module` on `xs [.., cols]` with weight `weight [out, cols]` (read only by the
    /// search pass); a call without rows is none.
    pub fn record(&mut self, module: &str, xs: &Tensor, weight: &Tensor) -> Result<()> {
        let cols = xs.dim(D::Minus1)?;
        let x = xs.reshape(((), cols))?.to_dtype(DType::F32)?;
        if x.dim(0)? == 0 {
            return Ok(());
        }
        match self.phase {
            Phase::Statistics => self.statistics(module, &x),
            Phase::Search => self.search(module, &x, weight),
        }
    }

    fn statistics(&mut self, module: &str, x: &Tensor) -> Result<()> {
        let abs = x.abs()?;
        let mean = round_to(&abs.mean(0)?, self.dtype)?;
        let amax = abs.max(0)?;
        match self.records.get_mut(module) {
            Some(record) => {
                record.act.add(mean, self.keep_calls)?;
                record.channel_amax = record.channel_amax.maximum(&amax)?;
                record.calls += 1;
            }
            None => {
                let mut act = OrderedSum::default();
                act.add(mean, self.keep_calls)?;
                let losses = OrderedSum::default();
                let record = Record { act, channel_amax: amax, calls: 1, scales: None, losses, searched: 0 };
                self.records.insert(module.to_string(), record);
            }
        }
        Ok(())
    }

    fn search(&mut self, module: &str, x: &Tensor, weight: &Tensor) -> Result<()> {
        let (quantizer, dtype, keep) = (self.quantizer, self.dtype, self.keep_calls);
        let record = self.records.get_mut(module).ok_or_else(|| {
            Error::internal(format!("AWQ: {module} ran in the search pass but not in the statistics pass"))
        })?;
        let weight = weight.to_dtype(DType::F32)?;
        if record.scales.is_none() {
            let act_sum =
                record.act.sum()?.ok_or_else(|| Error::internal(format!("AWQ: {module} has no statistics")))?;
            let act_sum = act_sum.to_vec1::<f32>()?;
            let act: Vec<f32> = act_sum.iter().map(|s| s / record.calls as f32).collect();
            let (out, cols) = weight.dims2()?;
            let values = weight.flatten_all()?.to_vec1::<f32>()?;
            record.scales = Some((act, weight_scale(&values, [out, cols], quantizer.block(), dtype)));
        }
        let Some((act, wscale)) = &record.scales else { unreachable!() };
        let device = x.device();
        let reference = x.matmul(&weight.t()?)?;
        let mut losses = Vec::with_capacity(ALPHAS.len());
        for &alpha in &ALPHAS {
            let s = smoothing(act, wscale, alpha);
            let inverse: Vec<f32> = s.iter().map(|v| 1.0 / v).collect();
            let inverse = round_to(&Tensor::from_vec(inverse, (1, s.len()), device)?, dtype)?;
            let scale = round_to(&Tensor::from_vec(s, (1, act.len()), device)?, dtype)?;
            let xs = round_to(&x.broadcast_mul(&inverse)?, dtype)?;
            let smoothed = round_to(&weight.broadcast_mul(&scale)?, dtype)?;
            let ws = match quantizer {
                AwqQuantizer::Int4 => fake_int4(&smoothed, quantizer.block(), dtype)?,
                AwqQuantizer::Nvfp4 => fake_nvfp4(&smoothed, dtype)?,
            };
            let diff = (xs.matmul(&ws.t()?)? - &reference)?;
            losses.push(diff.sqr()?.mean_all()?);
        }
        record.losses.add(Tensor::stack(&losses, 0)?, keep)?;
        record.searched += 1;
        Ok(())
    }

    /// Adds what `other` recorded over the batches after ours in the same pass (data parallel): sums of per-call
    /// means, calls and losses add up (in call order: bit for bit one run's when `other` [keeps its
    /// calls](Self::keeping_calls)), per-channel maxima take the larger. Both must be in the same phase; in the
    /// search pass, both must have started from the same statistics (see [`search_share`](Self::search_share)).
    pub fn merge(&mut self, other: AwqSearch) -> Result<()> {
        if self.phase != other.phase {
            return Err(Error::internal("AWQ searches in different passes cannot be merged"));
        }
        for (module, theirs) in other.records {
            let Some(ours) = self.records.get_mut(&module) else {
                self.records.insert(module, theirs);
                continue;
            };
            match self.phase {
                Phase::Statistics => {
                    ours.act.extend(theirs.act, self.keep_calls)?;
                    let theirs_amax = theirs.channel_amax.to_device(ours.channel_amax.device())?;
                    ours.channel_amax = ours.channel_amax.maximum(&theirs_amax)?;
                    ours.calls += theirs.calls;
                }
                Phase::Search => {
                    ours.losses.extend(theirs.losses, self.keep_calls)?;
                    ours.searched += theirs.searched;
                }
            }
        }
        Ok(())
    }

    /// Moves to the search pass (after every batch ran through the layer once).
    pub fn start_search(&mut self) {
        self.phase = Phase::Search;
    }

    /// The layer's results: per linear, its smoothing (neutral where the search saw no call).
    pub fn finish(self) -> Result<BTreeMap<String, Searched>> {
        let mut results = BTreeMap::new();
        for (module, record) in self.records {
            let channel_amax = record.channel_amax.to_vec1::<f32>()?;
            let searched = match (record.scales, record.losses.sum()?) {
                (Some((act, wscale)), Some(losses)) if record.searched > 0 => {
                    let losses: Vec<f64> = losses.to_vec1::<f32>()?.into_iter().map(f64::from).collect();
                    let alpha = ALPHAS[best_alpha(&losses)];
                    let usable = act.iter().chain(&wscale).all(|v| v.is_finite());
                    match usable {
                        true => Searched {
                            smoothing: Smoothing::from_scale(&smoothing(&act, &wscale, alpha)),
                            alpha: Some(alpha),
                            channel_amax,
                        },
                        false => Searched { smoothing: Smoothing::neutral(act.len()), alpha: None, channel_amax },
                    }
                }
                _ => Searched { smoothing: Smoothing::neutral(channel_amax.len()), alpha: None, channel_amax },
            };
            results.insert(module, searched);
        }
        Ok(results)
    }
}

/// The values rounded to `dtype` (BF16 or F16; F32 as they are), kept in f32.
fn round_to(xs: &Tensor, dtype: Dtype) -> Result<Tensor> {
    let to = match dtype {
        Dtype::BF16 => DType::BF16,
        Dtype::F16 => DType::F16,
        _ => return Ok(xs.clone()),
    };
    Ok(xs.to_dtype(to)?.to_dtype(DType::F32)?)
}

/// Round half to even of f32 values below 2²²: adding and removing 1.5·2²³ leaves the nearest integer, ties to even.
fn round_half_even(xs: &Tensor) -> Result<Tensor> {
    const MAGIC: f64 = 12_582_912.0;
    Ok(((xs + MAGIC)? - MAGIC)?)
}

/// A weight `[out, cols]` as rows of `block` values (with its shape); `E_TENSOR_SHAPE` unless `block` divides `cols`.
fn in_blocks(weight: &Tensor, block: usize, format: &str) -> Result<(Tensor, (usize, usize))> {
    let (out, cols) = weight.dims2()?;
    if cols % block != 0 {
        return Err(Error::ShapeInvalid {
            tensor: "AWQ search weight".into(),
            shape: vec![out, cols],
            message: format!("{format} blocks of {block} need the input dimension a multiple of {block}"),
        });
    }
    Ok((weight.reshape((out * cols / block, block))?, (out, cols)))
}

/// The weight fake-quantized to INT4 with one scale per `block` along K (the block's max |w| maps to 7), as
/// ModelOpt's search quantizes it: codes rounded half to even and clamped to [−8, 7], values back in the weights' `dtype`; a
/// block whose max is at most 2⁻²⁴ becomes zeros.
pub fn fake_int4(weight: &Tensor, block: usize, dtype: Dtype) -> Result<Tensor> {
    let (blocks, (out, cols)) = in_blocks(weight, block, "INT4")?;
    let amax = blocks.abs()?.max_keepdim(1)?;
    let floor = 2f64.powi(-24);
    let kept = amax.gt(floor)?.to_dtype(DType::F32)?;
    let scale = (amax.clamp(floor, f64::MAX)?.recip()? * 7.0)?;
    let codes = round_half_even(&blocks.broadcast_mul(&scale)?)?.clamp(-8.0, 7.0)?;
    let values = codes.broadcast_div(&scale)?.broadcast_mul(&kept)?;
    round_to(&values.reshape((out, cols))?, dtype)
}

/// The weight fake-quantized to NVFP4 as ModelOpt's search does it (its dynamic-block kernel): the global scale
/// `max |w| / (6·448)`, per block of 16 the scale `e4m3(min(block max / (6·global), 448)) · global` (1 where under
/// 1e-5), each `|w| / scale` rounded to E2M1 with the kernel's ties (at 0.25, 1.25, 2.5 and 5 down, at 0.75, 1.75
/// and 3.5 up), values back in the weights' `dtype`.
pub fn fake_nvfp4(weight: &Tensor, dtype: Dtype) -> Result<Tensor> {
    let (blocks, (out, cols)) = in_blocks(weight, 16, "NVFP4")?;
    let abs = blocks.abs()?;
    let global = (abs.max_all()?.to_dtype(DType::F32)? / (6.0 * 448.0))?;
    let global = global.maximum(1e-12)?;
    let block_max = abs.max_keepdim(1)?;
    let scale = block_max.broadcast_div(&(global.clone() * 6.0)?)?.minimum(448.0)?;
    // Rounded to E4M3 on the host (candle 0.11's CUDA backend names its f32 → E4M3 cast kernel wrongly): one value
    // per block of 16.
    let rounded: Vec<f32> =
        scale.flatten_all()?.to_vec1::<f32>()?.into_iter().map(|v| e4m3_to_f32(f32_to_e4m3(v))).collect();
    let scale = Tensor::from_vec(rounded, scale.shape(), scale.device())?.broadcast_mul(&global)?;
    let usable = scale.ge(1e-5)?.to_dtype(DType::F32)?;
    let scale = ((scale * &usable)? + (1.0 - &usable)?)?;
    let a = abs.broadcast_div(&scale)?;
    // E2M1: 0, 0.5, 1, 1.5, 2, 3, 4, 6 as increments past each threshold.
    let steps: [(f64, bool, f64); 7] = [
        (0.25, false, 0.5),
        (0.75, true, 0.5),
        (1.25, false, 0.5),
        (1.75, true, 0.5),
        (2.5, false, 1.0),
        (3.5, true, 1.0),
        (5.0, false, 2.0),
    ];
    let mut codes = a.zeros_like()?;
    for (threshold, inclusive, step) in steps {
        let past = if inclusive { a.ge(threshold)? } else { a.gt(threshold)? };
        codes = (codes + (past.to_dtype(DType::F32)? * step)?)?;
    }
    let values = (codes.broadcast_mul(&scale)? * blocks.sign()?)?;
    round_to(&values.reshape((out, cols))?, dtype)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn fake_int4_by_hand() {
        // Block max 3.5 → scale 2: 1.25·2 = 2.5 → 2 (tie to even) → 1.0; −0.75·2 = −1.5 → −2 → −1.0.
        let mut values = vec![0.0f32; 4];
        values[..4].copy_from_slice(&[3.5, 1.25, -0.75, 0.1]);
        let w = Tensor::from_vec(values, (1, 4), &Device::Cpu).unwrap();
        let q = fake_int4(&w, 4, Dtype::BF16).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(q, [3.5, 1.0, -1.0, 0.0]);
        let zeros = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(fake_int4(&zeros, 4, Dtype::BF16).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn fake_nvfp4_by_hand() {
        // Global max 6·448·g with g = 1/448 makes the global scale 1/448; a block whose max is 6 then has the scale
        // e4m3(6 / (6/448)) / 448 = 1: codes are the values on the E2M1 grid, ties by the kernel's rule.
        let mut values = vec![0.0f32; 32];
        values[..9].copy_from_slice(&[6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, -5.0, 5.1]);
        let w = Tensor::from_vec(values, (1, 32), &Device::Cpu).unwrap();
        let q = fake_nvfp4(&w, Dtype::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(&q[..9], &[6.0, 0.0, 1.0, 1.0, 2.0, 2.0, 4.0, -4.0, 6.0]);
        assert!(q[9..].iter().all(|v| *v == 0.0));
    }

    #[test]
    fn statistics_are_means_of_per_call_means_and_the_search_prefers_the_exact_alpha() {
        let device = Device::Cpu;
        // Two calls of different sizes: act_scale is the mean of the two calls' means, not a token mean.
        let pad = |row: &[f32]| -> Vec<f32> { row.iter().copied().chain(std::iter::repeat_n(1.0, 14)).collect() };
        let a = Tensor::from_vec([pad(&[1.0, -2.0]), pad(&[3.0, 4.0])].concat(), (2, 16), &device).unwrap();
        let b = Tensor::from_vec(pad(&[5.0, 0.0]), (1, 16), &device).unwrap();
        let weight = Tensor::from_vec(pad(&[1.0, 0.5]).repeat(2), (2, 16), &device).unwrap();
        let mut search = AwqSearch::new(AwqQuantizer::Nvfp4, Dtype::F32, BTreeSet::new(), BTreeSet::new());
        search.record("m", &a, &weight).unwrap();
        search.record("m", &b, &weight).unwrap();
        search.record("m", &Tensor::zeros((0, 16), DType::F32, &device).unwrap(), &weight).unwrap();
        search.start_search();
        search.record("m", &a, &weight).unwrap();
        search.record("m", &b, &weight).unwrap();
        let record = &search.records["m"];
        assert_eq!(record.calls, 2);
        let (act, _) = record.scales.clone().unwrap();
        assert_eq!(&act[..3], &[(2.0 + 5.0) / 2.0, (3.0 + 0.0) / 2.0, 1.0]);
        let results = search.finish().unwrap();
        assert_eq!(&results["m"].channel_amax[..3], &[5.0, 4.0, 1.0]);
        assert!(results["m"].alpha.is_some());
    }

    #[test]
    fn searches_over_shares_of_the_batches_merge_into_one_over_all() {
        let device = Device::Cpu;
        let batch = |seed: usize| {
            let values: Vec<f32> = (0..32).map(|i| ((i * 7 + seed * 13) as f32 * 0.37).sin() * 2.1).collect();
            Tensor::from_vec(values, (2, 16), &device).unwrap()
        };
        let weight = batch(9);
        let modules = || BTreeSet::from(["m".to_string()]);
        let new = || AwqSearch::new(AwqQuantizer::Nvfp4, Dtype::F32, modules(), BTreeSet::new());
        let batches: Vec<Tensor> = (0..7).map(batch).collect();
        let mut whole = new();
        batches.iter().for_each(|x| whole.record_linear("m", x, &weight).unwrap());
        let whole_statistics = whole.clone();
        whole.start_search();
        batches.iter().for_each(|x| whole.record_linear("m", x, &weight).unwrap());
        // Three devices: statistics of each share, merged in order; each then searches its share from the merged
        // statistics, and the searches merge in order. The later shares keep their calls: the same sums bit for bit.
        let shares = [&batches[..2], &batches[2..5], &batches[5..]];
        let mut searches: Vec<AwqSearch> = (0..3).map(|i| if i == 0 { new() } else { new().keeping_calls() }).collect();
        for (search, share) in searches.iter_mut().zip(shares) {
            share.iter().for_each(|x| search.record_linear("m", x, &weight).unwrap());
        }
        let mut merged = searches[0].clone();
        searches[1..].iter().for_each(|later| merged.merge(later.clone()).unwrap());
        let act = |search: &AwqSearch| search.records["m"].act.sum().unwrap().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(act(&merged), act(&whole_statistics));
        let mut searches: Vec<AwqSearch> = (0..3).map(|i| merged.search_share(&device, i > 0).unwrap()).collect();
        for (search, share) in searches.iter_mut().zip(shares) {
            share.iter().for_each(|x| search.record_linear("m", x, &weight).unwrap());
        }
        let mut searched = searches.remove(0);
        searches.into_iter().for_each(|later| searched.merge(later).unwrap());
        let whole = whole.finish().unwrap();
        assert_eq!(searched.finish().unwrap(), whole);
        assert!(whole["m"].alpha.is_some());
        let mut searching = new();
        searching.start_search();
        assert!(searching.merge(new()).is_err(), "passes differ");
    }

    #[test]
    fn a_linear_never_searched_keeps_a_neutral_smoothing() {
        let device = Device::Cpu;
        let x = Tensor::from_vec(vec![1.0f32, 2.0], (1, 2), &device).unwrap();
        let mut search = AwqSearch::new(AwqQuantizer::Int4, Dtype::BF16, BTreeSet::new(), BTreeSet::new());
        search.record("m", &x, &x).unwrap();
        let results = search.finish().unwrap();
        assert_eq!(results["m"].smoothing, Smoothing::neutral(2));
        assert_eq!(results["m"].alpha, None);
    }
}
