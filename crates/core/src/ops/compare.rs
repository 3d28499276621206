//! Comparing two models on the same token ids, one batch at a time: typically an original checkpoint and its
//! quantized export (which [`WeightLoader`](super::loader::WeightLoader) reads dequantized). Only summary
//! statistics are kept, so memory holds the logits of one batch of each model, never of the whole set.
//!
//! At every position (every row, every token: each one's logits are a next-token distribution), with P the
//! original's softmax and Q the quantized one's:
//! - `KL(P ‖ Q) = Σ_v P(v) · (log P(v) − log Q(v))` in nats, computed in f64 from log-softmaxes and clamped at 0
//!   (rounding can leave −1e-17 for equal distributions);
//! - top-1 agreement: whether both argmaxes (the first index of the largest logit) are the same token;
//! - for positions whose next token is known (all but the last of each row), each model's negative
//!   log-likelihood of that token, for perplexities.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::calib::data::{Batch, SequenceRequest};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model::descriptor::ModelDescriptor;
use crate::model::layers::{run_forward, ForwardOptions, ForwardProgress};

/// A comparison request: the sequences both models run on. Each model's logits of one batch
/// (`batch_size × seq_len × vocab` f32) are in memory at once.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct ComparisonRequest {
    #[serde(flatten)]
    pub sequences: SequenceRequest,
}

/// Which model a progress event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Original,
    Quantized,
}

/// Progress: `model`'s forward of batch `batch` (1-based) of `batches` has finished `layer` of `layers`.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct ComparisonProgress {
    pub model: Side,
    pub batch: usize,
    pub batches: usize,
    pub layer: usize,
    pub layers: usize,
}

/// The summary over every position.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct ComparisonReport {
    /// Positions compared (`samples × seq_len`).
    pub positions: usize,
    /// Mean KL(P_original ‖ P_quantized), nats.
    pub kl_mean: f64,
    pub kl_max: f64,
    /// `[sample, position]` of the largest KL.
    pub kl_max_at: [usize; 2],
    /// Fraction of positions whose argmax tokens agree.
    pub top1_agreement: f64,
    /// Positions with a known next token (`samples × (seq_len − 1)`).
    pub predicted_positions: usize,
    /// Mean negative log-likelihood of the actual next token, nats (NaN-free: 0 when no position has one).
    pub nll_original: f64,
    pub nll_quantized: f64,
    /// Sequences used (fewer than requested when the data ran out).
    pub samples: usize,
    pub requested_samples: usize,
    pub seq_len: usize,
    pub peak_rss_bytes: Option<u64>,
    pub seconds: f64,
}

/// Running sums over positions.
#[derive(Debug, Clone, Default)]
pub struct ComparisonStats {
    positions: usize,
    kl_sum: f64,
    kl_max: f64,
    kl_max_at: [usize; 2],
    top1_matches: usize,
    predicted: usize,
    nll_original: f64,
    nll_quantized: f64,
}

/// What one position's two distributions give.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionComparison {
    pub kl: f64,
    pub argmax_original: usize,
    pub argmax_quantized: usize,
    /// `log Σ exp(logits)` of each model, so `log P(v) = logit_v − log_norm`.
    pub log_norm_original: f64,
    pub log_norm_quantized: f64,
}

/// `(argmax, log Σ exp)` of one logit row, in f64.
fn log_normalizer(logits: &[f32]) -> (usize, f64) {
    let (mut argmax, mut max) = (0, f32::NEG_INFINITY);
    for (i, &x) in logits.iter().enumerate() {
        if x > max {
            (argmax, max) = (i, x);
        }
    }
    let max = f64::from(max);
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    (argmax, max + sum.ln())
}

/// Compares the next-token distributions of one position (`original` and `quantized` hold `vocab` logits each,
/// all finite).
pub fn compare_position(original: &[f32], quantized: &[f32]) -> PositionComparison {
    let (argmax_original, log_norm_original) = log_normalizer(original);
    let (argmax_quantized, log_norm_quantized) = log_normalizer(quantized);
    let kl: f64 = original
        .iter()
        .zip(quantized)
        .map(|(&p, &q)| {
            let log_p = f64::from(p) - log_norm_original;
            let log_q = f64::from(q) - log_norm_quantized;
            log_p.exp() * (log_p - log_q)
        })
        .sum();
    PositionComparison { kl: kl.max(0.0), argmax_original, argmax_quantized, log_norm_original, log_norm_quantized }
}

impl ComparisonStats {
    /// Adds the logits `[rows, seq_len, vocab]` of both models for one batch, whose ids `[rows, seq_len]` give the
    /// next tokens; `first_sample` numbers the batch's first row within the whole set.
    pub fn add_batch(
        &mut self,
        batch: &Batch,
        first_sample: usize,
        original: &[f32],
        quantized: &[f32],
        vocab: usize,
    ) -> Result<()> {
        let expected = batch.rows * batch.seq_len * vocab;
        for (side, logits) in [("original", original), ("quantized", quantized)] {
            if logits.len() != expected {
                return Err(Error::internal(format!(
                    "{side} logits hold {} values, not {}×{}×{vocab}",
                    logits.len(),
                    batch.rows,
                    batch.seq_len
                )));
            }
            if let Some(index) = logits.iter().position(|x| !x.is_finite()) {
                return Err(Error::NonFinite {
                    tensor: format!("the {side} model's logits"),
                    index,
                    context: String::new(),
                });
            }
        }
        let rows = original.chunks_exact(vocab).zip(quantized.chunks_exact(vocab));
        for (index, (p, q)) in rows.enumerate() {
            let (row, position) = (index / batch.seq_len, index % batch.seq_len);
            let compared = compare_position(p, q);
            self.positions += 1;
            self.kl_sum += compared.kl;
            if compared.kl > self.kl_max {
                self.kl_max = compared.kl;
                self.kl_max_at = [first_sample + row, position];
            }
            self.top1_matches += usize::from(compared.argmax_original == compared.argmax_quantized);
            if position + 1 < batch.seq_len {
                let next = batch.ids[index + 1] as usize;
                self.predicted += 1;
                self.nll_original += compared.log_norm_original - f64::from(p[next]);
                self.nll_quantized += compared.log_norm_quantized - f64::from(q[next]);
            }
        }
        Ok(())
    }

    /// Positions added so far.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// Mean KL, max KL and where, top-1 agreement, and the mean NLLs (0 where nothing was added).
    fn summary(&self) -> (f64, f64, [usize; 2], f64, f64, f64) {
        let mean = |sum: f64, count: usize| if count == 0 { 0.0 } else { sum / count as f64 };
        (
            mean(self.kl_sum, self.positions),
            self.kl_max,
            self.kl_max_at,
            mean(self.top1_matches as f64, self.positions),
            mean(self.nll_original, self.predicted),
            mean(self.nll_quantized, self.predicted),
        )
    }
}

/// Runs both models over the request's sequences, batch by batch, and compares their next-token distributions.
pub fn compare_models(
    original_dir: &Path,
    original: &ModelDescriptor,
    quantized_dir: &Path,
    quantized: &ModelDescriptor,
    request: &ComparisonRequest,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(ComparisonProgress),
) -> Result<ComparisonReport> {
    let started = Instant::now();
    if original.vocab_size != quantized.vocab_size {
        return Err(Error::internal(format!(
            "the models have different vocabularies ({} and {} tokens), so their distributions cannot be compared",
            original.vocab_size, quantized.vocab_size
        )));
    }
    let vocab = original.vocab_size;
    let set = request.sequences.load(original_dir, vocab, cancel)?;
    let checkpoints = [Checkpoint::open(original_dir)?, Checkpoint::open(quantized_dir)?];
    let devices = request.sequences.compute_devices()?;
    let forward_options = ForwardOptions { logits: true, all_experts_stats: false, devices, load_in_turn: false };
    let batches = set.batches.len();
    let mut stats = ComparisonStats::default();
    let mut first_sample = 0;
    for (index, batch) in set.batches.iter().enumerate() {
        let mut logits = Vec::with_capacity(2);
        for ((side, checkpoint), desc) in
            [Side::Original, Side::Quantized].into_iter().zip(&checkpoints).zip([original, quantized])
        {
            let mut report = |event: ForwardProgress| {
                progress(ComparisonProgress {
                    model: side,
                    batch: index + 1,
                    batches,
                    layer: event.layer,
                    layers: event.layers,
                })
            };
            let result =
                run_forward(checkpoint, desc, std::slice::from_ref(batch), &forward_options, cancel, &mut report)?;
            logits.push(result.logits.into_iter().next().unwrap_or_default());
        }
        stats.add_batch(batch, first_sample, &logits[0], &logits[1], vocab)?;
        first_sample += batch.rows;
    }
    let (kl_mean, kl_max, kl_max_at, top1_agreement, nll_original, nll_quantized) = stats.summary();
    Ok(ComparisonReport {
        positions: stats.positions,
        kl_mean,
        kl_max,
        kl_max_at,
        top1_agreement,
        predicted_positions: stats.predicted,
        nll_original,
        nll_quantized,
        samples: set.sample_count(),
        requested_samples: set.requested_samples,
        seq_len: request.sequences.seq_len,
        peak_rss_bytes: crate::memory::peak_rss_bytes(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obviously correct KL: probabilities by explicit softmax, then Σ p log(p/q).
    fn kl_reference(p_logits: &[f32], q_logits: &[f32]) -> f64 {
        let softmax = |xs: &[f32]| -> Vec<f64> {
            let exps: Vec<f64> = xs.iter().map(|&x| f64::from(x).exp()).collect();
            let total: f64 = exps.iter().sum();
            exps.into_iter().map(|e| e / total).collect()
        };
        let (p, q) = (softmax(p_logits), softmax(q_logits));
        p.iter().zip(&q).map(|(a, b)| if *a == 0.0 { 0.0 } else { a * (a / b).ln() }).sum()
    }

    #[test]
    fn identical_distributions_have_zero_kl() {
        let logits = [1.5f32, -2.0, 0.25, 3.0, 3.0];
        let compared = compare_position(&logits, &logits);
        assert_eq!(compared.kl, 0.0);
        assert_eq!((compared.argmax_original, compared.argmax_quantized), (3, 3), "ties go to the first index");
        // Shifting every logit leaves the distribution unchanged.
        let shifted: Vec<f32> = logits.iter().map(|x| x + 10.0).collect();
        assert!(compare_position(&logits, &shifted).kl < 1e-12);
    }

    #[test]
    fn kl_matches_the_reference() {
        let p = [0.3f32, -1.0, 2.0, 0.0, 0.7];
        let q = [0.1f32, -0.5, 1.5, 0.4, 0.9];
        let compared = compare_position(&p, &q);
        assert!((compared.kl - kl_reference(&p, &q)).abs() < 1e-12, "{} vs {}", compared.kl, kl_reference(&p, &q));
        assert!(compared.kl > 0.0);
        // A two-token case by hand: P = (1/2, 1/2), Q = (1/(1+e), e/(1+e)).
        let kl = compare_position(&[0.0, 0.0], &[0.0, 1.0]).kl;
        let e = 1f64.exp();
        let want = 0.5 * (0.5 * (1.0 + e)).ln() + 0.5 * (0.5 * (1.0 + e) / e).ln();
        assert!((kl - want).abs() < 1e-12);
        // Large logits stay finite.
        assert!(compare_position(&[1000.0, 0.0], &[0.0, 1000.0]).kl.is_finite());
    }

    #[test]
    fn stats_count_agreement_and_next_token_likelihoods() {
        // One row of 3 positions over a vocabulary of 2; the ids are [0, 1, 1].
        let batch = Batch { ids: vec![0, 1, 1], rows: 1, seq_len: 3 };
        let original = [2.0f32, 0.0, 0.0, 2.0, 1.0, 0.0];
        let quantized = [2.0f32, 0.0, 2.0, 0.0, 1.0, 0.0];
        let mut stats = ComparisonStats::default();
        stats.add_batch(&batch, 4, &original, &quantized, 2).unwrap();
        let (kl_mean, kl_max, kl_max_at, agreement, nll_original, nll_quantized) = stats.summary();
        assert_eq!(stats.positions(), 3);
        assert!((agreement - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(kl_max_at, [4, 1]);
        assert!((kl_mean - kl_max / 3.0).abs() < 1e-12, "only position 1 differs");
        // Position 0 predicts id 1, position 1 predicts id 1; the last position predicts nothing.
        let nll = |logits: &[f32], target: usize| {
            logits.iter().map(|&x| f64::from(x).exp()).sum::<f64>().ln() - f64::from(logits[target])
        };
        let want_original = (nll(&original[0..2], 1) + nll(&original[2..4], 1)) / 2.0;
        let want_quantized = (nll(&quantized[0..2], 1) + nll(&quantized[2..4], 1)) / 2.0;
        assert!((nll_original - want_original).abs() < 1e-12);
        assert!((nll_quantized - want_quantized).abs() < 1e-12);
    }

    #[test]
    fn non_finite_logits_are_an_error() {
        let batch = Batch { ids: vec![0], rows: 1, seq_len: 1 };
        let mut stats = ComparisonStats::default();
        let err = stats.add_batch(&batch, 0, &[0.0, 1.0], &[f32::NAN, 1.0], 2).unwrap_err();
        assert_eq!(err.code(), "E_TENSOR_NON_FINITE");
        assert!(err.to_string().contains("quantized"), "{err}");
        assert_eq!(stats.add_batch(&batch, 0, &[0.0], &[0.0], 2).unwrap_err().code(), "E_INTERNAL");
    }
}
