//! The model's head after the last layer: final norm and lm_head over every batch, for evaluation.

use candle_core::{DType, Tensor};

use super::LayerStream;
use crate::error::Result;
use crate::model::blocks::linear::Linear;
use crate::model::blocks::norm::HiddenNorm;
use crate::model::descriptor::ModelDescriptor;
use crate::model::observe::Observers;

impl LayerStream<'_> {
    /// Final norm and lm_head over every batch (after the last layer), soft-capped where the model caps them:
    /// logits `[rows, seq_len, vocab]`.
    pub fn logits(&mut self) -> Result<Vec<Vec<f32>>> {
        let desc = self.desc;
        let mut logits = Vec::with_capacity(self.batches());
        // Several devices load the head from one read of it.
        let norm = format!("{}.", desc.final_norm.strip_suffix(".weight").unwrap_or(&desc.final_norm));
        let head: Vec<&str> = [Some(norm.as_str()), Some(desc.lm_head.as_str()), desc.lm_head_bias.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let several = self.shards.len() > 1;
        if several {
            self.checkpoint.prefetch_next(&head);
            self.checkpoint.share_read_ahead(&head);
        }
        let all = self.head_logits_on_shards(&mut logits);
        if several {
            self.checkpoint.release_read_ahead(&head);
        }
        all?;
        Ok(logits)
    }

    /// Each device's batches through the final norm and lm_head, appended to `logits` in batch order.
    fn head_logits_on_shards(&mut self, logits: &mut Vec<Vec<f32>>) -> Result<()> {
        let desc = self.desc;
        for shard in &self.shards {
            let loader = &shard.loader;
            let norm = self.norm_style().hidden(loader, &desc.final_norm)?;
            let weight = loader.tensor_shaped(&desc.lm_head, &[desc.vocab_size, desc.hidden_size])?;
            let bias = desc.lm_head_bias.as_ref().map(|b| loader.tensor_shaped(b, &[desc.vocab_size])).transpose()?;
            let head = Linear::from_weight("lm_head", weight, bias);
            Self::head_logits(desc, &norm, &head, &shard.hidden, &mut self.observers, logits)?;
        }
        Ok(())
    }

    /// The logits of `hidden`'s batches, appended to `logits`.
    fn head_logits(
        desc: &ModelDescriptor,
        norm: &HiddenNorm,
        head: &Linear,
        hidden: &[Tensor],
        observers: &mut Observers,
        logits: &mut Vec<Vec<f32>>,
    ) -> Result<()> {
        for xs in hidden {
            let normed = norm.forward(xs)?;
            observers.record_input(&["lm_head"], &normed)?;
            let mut ys = head.forward(&normed)?;
            if let Some(cap) = desc.final_logit_softcapping {
                ys = ((ys / cap)?.tanh()? * cap)?;
            }
            let ys = (ys.to_dtype(DType::F32)? / desc.logits_scaling)?;
            logits.push(ys.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(())
    }
}
