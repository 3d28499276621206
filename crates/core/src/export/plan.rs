//! The export plan as TS sends it (`ts/export/plan.ts` builds it). Names are full tensor or module names;
//! per-expert output names contain `{e}`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::checkpoint::{Checkpoint, Dtype};
use crate::error::{Error, Result};
use crate::formats::FormatName;
use crate::model::descriptor::{ExpertLayout, ExpertTensors};

#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct ExportPlan {
    pub format: FormatName,
    /// Tensors written unchanged: input name → output name (some joined with others, as transformers joins them).
    pub keep: Vec<KeptTensor>,
    /// Linears quantized outside the routed experts.
    pub linears: Vec<LinearPlan>,
    /// Routed experts, one entry per MoE layer.
    pub experts: Vec<ExpertPlan>,
    /// The calibrated scales of an FP8 KV cache, one entry per attention whose keys and values the forward records
    /// (none for an uncalibrated KV cache or none at all).
    #[serde(default)]
    pub kv_scales: Vec<KvScalePlan>,
    /// The norms whose weights absorb an AWQ group's `pre_quant_scale` (written here, not kept).
    #[serde(default)]
    pub awq_norms: Vec<AwqNormPlan>,
    /// NVFP4_AWQ: linears whose `pre_quant_scale` the preceding linear's output rows absorb.
    #[serde(default)]
    pub awq_folds: Vec<AwqFoldPlan>,
    /// Files written with the given text (config.json, hf_quant_config.json).
    pub files: BTreeMap<String, String>,
    /// Files of the input directory copied unchanged (tokenizer, generation config …).
    pub copy: Vec<String>,
    pub max_shard_bytes: u64,
    pub overwrite: bool,
    /// How the quantized tensors are stored: ModelOpt's form (the default) or compressed-tensors'.
    #[serde(default)]
    pub encoding: super::Encoding,
}

#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct KeptTensor {
    pub input: String,
    pub output: String,
    /// Further inputs whose rows follow `input`'s in the output, along the first axis (the hub's
    /// `q_conv1d`, `k_conv1d`, `v_conv1d` written as the `conv1d` transformers joins them into); each of the same
    /// dtype and the same other dimensions.
    #[serde(default)]
    pub join: Option<Vec<String>>,
}

impl KeptTensor {
    fn joined(&self) -> impl Iterator<Item = &String> {
        self.join.iter().flatten()
    }

    /// Whether the tensor `name` is among its inputs.
    pub fn reads(&self, name: &str) -> bool {
        self.input == name || self.joined().any(|joined| joined == name)
    }

    /// The output's dtype and shape; `E_TENSOR_SHAPE` when a joined input differs from the first in dtype or in a
    /// dimension but the first.
    pub fn layout(&self, checkpoint: &Checkpoint) -> Result<(Dtype, Vec<usize>)> {
        let first = checkpoint.info(&self.input)?;
        let mut shape = first.shape.clone();
        for name in self.joined() {
            let part = checkpoint.info(name)?;
            if part.dtype != first.dtype || part.shape.is_empty() || shape.is_empty() || part.shape[1..] != shape[1..] {
                return Err(Error::ShapeInvalid {
                    tensor: name.clone(),
                    shape: part.shape.clone(),
                    message: format!(
                        "{:?}: cannot follow {} ({:?} {:?}) along the first axis in {}",
                        part.dtype, self.input, first.dtype, first.shape, self.output
                    ),
                });
            }
            shape[0] += part.shape[0];
        }
        Ok((first.dtype, shape))
    }

    /// The output's bytes handed to `part` in order, at most `part_bytes` at a time: the input's, then each joined
    /// input's (row-major, so joining along the first axis is concatenating the bytes; [`Self::layout`] checks
    /// that they can be joined). See [`Checkpoint::read_in_parts`]: an embedding of a gigabyte is never whole in
    /// memory unless the read-ahead holds it already.
    pub fn read_in_parts(
        &self,
        checkpoint: &Checkpoint,
        part_bytes: usize,
        part: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        std::iter::once(&self.input)
            .chain(self.joined())
            .try_for_each(|name| checkpoint.read_in_parts(name, part_bytes, part))
    }
}

/// One linear (`[out, in]` weight) to quantize.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct LinearPlan {
    /// The decoder layer it belongs to; quantized right after that layer's calibration.
    pub layer: usize,
    /// Input module name (`<module>.weight` is read).
    pub module: String,
    /// Output module name (`<output>.weight`, `.weight_scale`, … are written).
    pub output: String,
    /// Modules sharing one weight amax with this one (NVFP4 q/k/v, gate/up); empty when its own.
    #[serde(default)]
    pub weight_group: Vec<String>,
    /// Modules whose input amax is shared with this one (they read the same input); empty when its own.
    #[serde(default)]
    pub input_group: Vec<String>,
    /// The forward never runs it as a linear, so none of its inputs is observed (Jamba's `dt_proj`, whose weight
    /// transformers multiplies directly): its weight is quantized and, as ModelOpt writes it, no `input_scale`.
    #[serde(default)]
    pub weight_only: bool,
    /// `[start, count]`: the linear is these rows of the module's weight (a fused q/k/v projection written as
    /// its q, k and v linears); the whole weight when absent.
    #[serde(default)]
    pub rows: Option<[usize; 2]>,
    /// Its own format (a mixed-precision recipe's); the plan's when absent.
    #[serde(default)]
    #[ts(optional)]
    pub format: Option<FormatName>,
}

impl LinearPlan {
    /// The shape of the linear's weight, from the module's.
    pub fn shape(&self, module_shape: &[usize]) -> Vec<usize> {
        let mut shape = module_shape.to_vec();
        if let (Some([_, count]), Some(first)) = (self.rows, shape.first_mut()) {
            *first = count;
        }
        shape
    }
}

/// The KV cache scales of one attention: `<output>.k_proj.k_scale` and `<output>.v_proj.v_scale`, each the maximum the
/// calibration forward recorded for its keys or values over 448 (ModelOpt's calibrated FP8 KV cache).
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct KvScalePlan {
    /// The decoder layer the attention belongs to.
    pub layer: usize,
    /// The attention module as the forward records it (`Observers::kv_amax`).
    pub attention: String,
    /// The attention module's output name.
    pub output: String,
}

/// A norm whose output the linears of one AWQ input group read (q/k/v after the input norm, gate/up after the
/// post-attention norm): its weight is written multiplied by the group's mean `pre_quant_scale`, which the linears
/// then do not carry (as ModelOpt's export folds it).
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct AwqNormPlan {
    /// The decoder layer it belongs to.
    pub layer: usize,
    /// The norm's weight tensor, read.
    pub input: String,
    /// Its output name (a tensor name ending in `.weight`).
    pub output: String,
    /// The linears (module names, the group's) whose mean `pre_quant_scale` it absorbs.
    pub modules: Vec<String>,
    /// The norm scales by `1 + weight` (Gemma's): `(w + 1)·s − 1` is written.
    #[serde(default)]
    pub offset: bool,
}

/// A linear whose input is another's output, unchanged but for the channels (NVFP4_AWQ, as ModelOpt folds it for
/// Llama and Qwen3 attention and MLPs): `from`'s `pre_quant_scale` (its own, before any group mean) multiplies the
/// output rows of `into`, and `from` carries none. `o_proj` into `v_proj` (without grouped heads), `down_proj` into
/// `up_proj`; for routed experts, the patterns of the experts' output names (`…experts.{e}.down_proj` into
/// `…experts.{e}.up_proj`).
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct AwqFoldPlan {
    /// The decoder layer both belong to.
    pub layer: usize,
    /// The linear whose smoothing is folded (its module name, or the experts' output pattern).
    pub from: String,
    /// The linear whose output rows absorb it.
    pub into: String,
}

/// The routed experts of one MoE layer.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct ExpertPlan {
    pub layer: usize,
    /// The MoE block (as in the model descriptor), whose observers hold the shared input amaxes.
    pub block: String,
    /// Where the experts are read from.
    pub source: ExpertTensors,
    /// How they are written.
    pub output: ExpertOutput,
    /// Their own format (a mixed-precision recipe's); the plan's when absent.
    #[serde(default)]
    #[ts(optional)]
    pub format: Option<FormatName>,
}

/// The form the routed experts of one layer are written in.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExpertOutput {
    /// One quantized linear per expert and projection, as families that store experts one by one on the hub.
    PerExpert(PerExpertOutput),
    /// The stacks kept whole, as ModelOpt exports experts stored stacked on the hub (GPT-OSS, Llama4): the
    /// source's `gate_up` `[E, H, 2I]` and `down` `[E, I, H]` (layout `fused_transposed` or
    /// `fused_interleaved`, columns in their stored order) quantized under these parameter names.
    Fused(FusedOutput),
}

/// Output module names with `{e}`: `…experts.{e}.gate_proj` (or `w1`), `up_proj` (`w3`), `down_proj` (`w2`);
/// no gate for ungated experts (Nemotron-H's relu²: up and down only).
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct PerExpertOutput {
    #[serde(default)]
    pub gate: Option<String>,
    pub up: String,
    pub down: String,
}

/// Output parameter names of the stacks: `…experts.gate_up_proj` and `…experts.down_proj` (the codes are
/// written under the name itself, the scales as `<name>_weight_scale` …).
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct FusedOutput {
    pub gate_up: String,
    pub down: String,
}

/// One stack of a fused output: the tensor read, the parameter written, its shape `[E, K, N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub input: String,
    pub output: String,
    pub shape: [usize; 3],
}

impl FusedOutput {
    /// The two stacks (`gate_up` `[E, H, 2I]`, `down` `[E, I, H]`) as `source` stores them.
    pub fn stacks(&self, source: &ExpertTensors) -> Result<[Stack; 2]> {
        let stacked = matches!(source.layout, ExpertLayout::FusedTransposed | ExpertLayout::FusedInterleaved);
        let Some(gate_up) = source.gate_up.as_ref().filter(|_| stacked) else {
            return Err(Error::internal(format!(
                "{}: a fused output needs experts stored stacked [E, H, 2I] (layout {:?})",
                source.down, source.layout
            )));
        };
        let (experts, hidden, inter) = (source.experts, source.hidden, source.intermediate);
        Ok([
            Stack { input: gate_up.clone(), output: self.gate_up.clone(), shape: [experts, hidden, 2 * inter] },
            Stack { input: source.down.clone(), output: self.down.clone(), shape: [experts, inter, hidden] },
        ])
    }
}

impl ExportPlan {
    /// The decoder layers with something to quantize, in order.
    pub fn layers(&self) -> Vec<usize> {
        let layers: std::collections::BTreeSet<usize> = self
            .linears
            .iter()
            .map(|l| l.layer)
            .chain(self.experts.iter().map(|x| x.layer))
            .chain(self.kv_scales.iter().map(|kv| kv.layer))
            .collect();
        layers.into_iter().collect()
    }

    /// The formats its linears and experts are written in (the plan's own when it quantizes nothing), in
    /// [`FormatName::ALL`]'s order.
    pub fn formats_used(&self) -> Vec<FormatName> {
        let named: Vec<FormatName> = self
            .linears
            .iter()
            .map(|l| l.format)
            .chain(self.experts.iter().map(|x| x.format))
            .map(|name| name.unwrap_or(self.format))
            .collect();
        FormatName::ALL.into_iter().filter(|n| named.contains(n) || (named.is_empty() && *n == self.format)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint directory holding bf16 tensors `(name, shape, first byte)`, each byte of a tensor counting up
    /// from its first.
    fn checkpoint(tensors: &[(&str, &[usize], u8)]) -> (tempfile::TempDir, Checkpoint) {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<Vec<u8>> = tensors
            .iter()
            .map(|(_, shape, first)| {
                (0..shape.iter().product::<usize>() * 2).map(|i| first.wrapping_add(i as u8)).collect()
            })
            .collect();
        let views = tensors.iter().zip(&data).map(|((name, shape, _), bytes)| {
            (*name, safetensors::tensor::TensorView::new(Dtype::BF16.to_safetensors(), shape.to_vec(), bytes).unwrap())
        });
        safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
        let checkpoint = Checkpoint::open(dir.path()).unwrap();
        (dir, checkpoint)
    }

    fn kept(input: &str, join: &[&str]) -> KeptTensor {
        KeptTensor {
            input: input.into(),
            output: "conv1d.weight".into(),
            join: Some(join.iter().map(|n| n.to_string()).collect()),
        }
    }

    #[test]
    fn joined_inputs_follow_the_first_along_the_first_axis() {
        let (_dir, checkpoint) = checkpoint(&[("q", &[2, 1, 2], 0), ("k", &[1, 1, 2], 100), ("v", &[2, 1, 2], 200)]);
        let joined = kept("q", &["k", "v"]);
        assert_eq!(joined.layout(&checkpoint).unwrap(), (Dtype::BF16, vec![5, 1, 2]));
        // In parts of 3 bytes: parts end within a tensor and at each input's end, never across two inputs.
        let parts = |kept: &KeptTensor| {
            let mut parts: Vec<Vec<u8>> = Vec::new();
            kept.read_in_parts(&checkpoint, 3, &mut |part| {
                parts.push(part.to_vec());
                Ok(())
            })
            .unwrap();
            parts
        };
        let want: Vec<Vec<u8>> = [0..3, 3..6, 6..8, 100..103, 103..104, 200..203, 203..206, 206..208]
            .into_iter()
            .map(|range| range.collect())
            .collect();
        assert_eq!(parts(&joined), want);
        let alone = KeptTensor { input: "k".into(), output: "k".into(), join: None };
        assert_eq!(alone.layout(&checkpoint).unwrap(), (Dtype::BF16, vec![1, 1, 2]));
        assert_eq!(parts(&alone), vec![vec![100, 101, 102], vec![103]]);
        // A failing consumer ends the read with its error.
        let mut calls = 0;
        let error = joined
            .read_in_parts(&checkpoint, 3, &mut |_| {
                calls += 1;
                Err(Error::internal("the output failed"))
            })
            .unwrap_err();
        assert!(error.to_string().contains("the output failed") && calls == 1, "{error} after {calls} parts");
    }

    #[test]
    fn inputs_that_differ_past_the_first_axis_are_not_joined() {
        let (_dir, checkpoint) = checkpoint(&[("q", &[2, 1, 4], 0), ("k", &[2, 1, 2], 0)]);
        let error = kept("q", &["k"]).layout(&checkpoint).unwrap_err();
        assert_eq!(error.code(), "E_TENSOR_SHAPE", "{error}");
        assert!(error.to_string().contains('k'), "{error}");
    }
}
