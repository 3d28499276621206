//! Data-parallel calibration's reduction, simulated on the CPU: the calibration batches split between two
//! "devices", each running its share through the whole model, and their observers merged (`Observers::merge`: maxima
//! take the larger, token counts add up) record exactly what one run over all the batches records, for every
//! committed descriptor (MoE routing, KV maxima, each family's mixers).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

mod common;

use std::sync::atomic::AtomicBool;

use common::forward::{fixtures, reference, DESCRIBED};
use moe_quant_core::calib::data::Batch;
use moe_quant_core::model::layers::{run_forward, ForwardOptions};
use moe_quant_core::model::observe::Observers;
use moe_quant_core::model::ModelDescriptor;
use moe_quant_core::Checkpoint;

fn observers(fixture: &str, batches: &[Batch]) -> Observers {
    let name = format!("{}.json", fixture.replace('/', "_"));
    let text = std::fs::read_to_string(fixtures().join("descriptors").join(name)).unwrap();
    let descriptor: ModelDescriptor = serde_json::from_str(&text).unwrap();
    let checkpoint = Checkpoint::open(fixtures().join(fixture)).unwrap();
    let options = ForwardOptions::default();
    run_forward(&checkpoint, &descriptor, batches, &options, &AtomicBool::new(false), &mut |_| {}).unwrap().observers
}

/// The reference ids' rows, one batch each.
fn rows(fixture: &str) -> Vec<Batch> {
    let (batch, _) = reference(fixture);
    (0..batch.rows).map(|r| Batch { ids: batch.row(r).unwrap().to_vec(), rows: 1, seq_len: batch.seq_len }).collect()
}

#[test]
fn merged_shares_record_what_one_run_records() {
    for fixture in DESCRIBED {
        let batches = rows(fixture);
        assert!(batches.len() >= 2, "{fixture}");
        let whole = observers(fixture, &batches);
        let (first, second) = batches.split_at(batches.len() / 2);
        let mut merged = observers(fixture, first);
        merged.merge(observers(fixture, second)).unwrap();
        assert_eq!(serde_json::to_value(&merged).unwrap(), serde_json::to_value(&whole).unwrap(), "{fixture}");
        // Not trivially so: each share alone records less.
        let share = observers(fixture, first);
        let tokens = |o: &Observers| o.experts.values().flat_map(|s| s.tokens.iter()).sum::<u64>();
        if !whole.experts.is_empty() {
            assert!(tokens(&share) < tokens(&whole), "{fixture}");
        }
    }
}
