//! The AWQ search's passes over a layer (see `awq::search`): the search attached to the statistics pass, then the
//! search pass over the layer's inputs again.

use std::collections::{BTreeSet, HashMap};

use candle_core::Tensor;

use super::{layer_prefix, LayerStream};
use crate::awq::search::AwqSearch;
use crate::error::{Error, Result};
use crate::formats::AwqQuantizer;
use crate::model::blocks::key_selection::ChosenKeys;
use crate::model::blocks::rope::Rope;
use crate::model::decoder::DecoderLayer;
use crate::model::observe::Observers;
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

    /// The AWQ search of the next layer: its searched linears' weights loaded as the forward runs them.
    pub(super) fn awq_search(&self) -> Result<Option<AwqSearch>> {
        let Some(plan) = &self.awq else { return Ok(None) };
        let Some(prefix) = layer_prefix(self.desc, self.next_layer) else { return Ok(None) };
        let weights = plan
            .modules
            .iter()
            .filter(|module| module.starts_with(prefix))
            .map(|module| Ok((module.clone(), self.loader.weight(module)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let blocks = plan.blocks.iter().filter(|block| block.starts_with(prefix)).cloned().collect();
        Ok(Some(AwqSearch::new(plan.quantizer, plan.dtype, weights, blocks)))
    }

    /// The AWQ search pass of a layer: `inputs` (each batch's input of the layer) run through it again with the
    /// search attached, on observers of their own (the statistics pass recorded everything else); the layer's
    /// results go to `observers.smoothing`. `on_batch(done)` follows the runs (not called after the last).
    pub(super) fn awq_search_pass(
        observers: &mut Observers,
        layer: &DecoderLayer,
        rope: Option<&Rope>,
        inputs: &[Tensor],
        mut chosen: Vec<ChosenKeys>,
        on_batch: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let Some(mut search) = observers.awq.take() else { return Ok(()) };
        search.start_search();
        let mut scratch = Observers::default();
        scratch.awq = Some(search);
        for (run, (xs, chosen)) in inputs.iter().zip(&mut chosen).enumerate() {
            layer.forward(xs, rope, chosen, &mut scratch)?;
            if run + 1 < inputs.len() {
                on_batch(run + 1);
            }
        }
        let search = scratch.awq.take().ok_or_else(|| Error::internal("the AWQ search was lost"))?;
        observers.smoothing = search.finish()?;
        Ok(())
    }
}
