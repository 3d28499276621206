//! The AWQ search's passes over a layer (see `awq::search`): the search attached to the statistics pass, then the
//! search pass over the layer's inputs again.

use std::collections::BTreeSet;

use candle_core::Tensor;

use super::shard::{on_shards, Progress};
use super::{layer_prefix, LayerStream};
use crate::awq::search::AwqSearch;
use crate::error::{Error, Result};
use crate::formats::AwqQuantizer;
use crate::model::blocks::key_selection::ChosenKeys;
use crate::model::decoder::DecoderLayer;
use crate::numerics::dtype::Dtype;

/// What the AWQ search covers (the plan's linears and routed experts in an AWQ format): each layer then runs its
/// batches twice, for the statistics and for the search (see `awq::search`).
#[derive(Debug, Clone)]
pub struct AwqPlan {
    /// The weight quantizer the search fake-quantizes with.
    pub quantizer: AwqQuantizer,
    /// The dtype the searched weights are stored in.
    pub dtype: Dtype,
    /// Linears, by module name.
    pub modules: BTreeSet<String>,
    /// MoE blocks whose routed experts are searched.
    pub blocks: BTreeSet<String>,
}

impl LayerStream<'_> {
    /// Runs the AWQ search of `plan` in every layer from the next on (each layer's results in
    /// `observers.smoothing` once it ran).
    pub fn search_awq(&mut self, plan: AwqPlan) {
        self.awq = Some(plan);
    }

    /// The AWQ search of the next layer on each device, empty (None without a search): the forward hands it each
    /// searched linear's weight as it runs it. Every device after the first keeps its calls apart for the merge.
    pub(super) fn awq_searches(&self) -> Result<Vec<Option<AwqSearch>>> {
        let Some((plan, prefix)) = self.awq.as_ref().zip(layer_prefix(self.desc, self.next_layer)) else {
            return Ok(vec![None; self.shards.len()]);
        };
        let blocks: BTreeSet<String> = plan.blocks.iter().filter(|block| block.starts_with(prefix)).cloned().collect();
        let modules: BTreeSet<String> =
            plan.modules.iter().filter(|module| module.starts_with(prefix)).cloned().collect();
        let search = AwqSearch::new(plan.quantizer, plan.dtype, modules, blocks);
        let later = search.clone().keeping_calls();
        Ok((0..self.shards.len()).map(|i| Some(if i == 0 { search.clone() } else { later.clone() })).collect())
    }

    /// The AWQ search pass of a layer, after its statistics pass merged into `observers.awq`: each device runs its
    /// `inputs` (each batch's input of the layer, with the keys chosen before it) through its copy of the layer again,
    /// searching from the merged statistics; the searches merge in batch order and the layer's results go to
    /// `observers.smoothing`.
    pub(super) fn awq_search_pass(
        &mut self,
        layers: &[DecoderLayer],
        inputs: Vec<(Vec<Tensor>, Vec<ChosenKeys>)>,
        progress: &mut Progress<'_>,
    ) -> Result<()> {
        let Some(merged) = self.observers.awq.take() else { return Ok(()) };
        let searches = (self.shards.iter().enumerate())
            .map(|(i, shard)| merged.search_share(&shard.loader.device, i > 0))
            .collect::<Result<Vec<_>>>()?;
        let desc = &self.desc.layers[self.next_layer];
        let work = layers.iter().zip(searches).zip(inputs).collect();
        let searched = on_shards(
            &mut self.shards,
            work,
            |shard, ((layer, search), inputs), tick| shard.search(layer, desc, search, inputs, tick),
            progress,
        )?;
        let mut searched = searched.into_iter();
        let mut all = searched.next().ok_or_else(|| Error::internal("an AWQ search on no device"))?;
        searched.try_for_each(|later| all.merge(later))?;
        self.observers.smoothing = all.finish()?;
        Ok(())
    }
}
