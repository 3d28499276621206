//! Checkpoint I/O on valid input: writer → reader round trips (sharded and single file), zero-copy views
//! of fused expert tensors, the writer's atomic publishing and its refusals, and the header listing.

// clippy.toml's allow-*-in-tests covers `#[test]` functions only; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{assert_error, declare_and_write, expect_err, temp_dir, write_index, write_valid, Tensor};
use moe_quant_core::checkpoint::{TensorLayout, INDEX_FILE, SINGLE_FILE};
use moe_quant_core::{inspect_headers, Checkpoint, CheckpointWriter, Dtype, WriterOptions};

const EXPERTS: usize = 4;
const INTERMEDIATE: usize = 3;
const HIDDEN: usize = 5;

fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect()
}

fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Values exactly representable in bf16 and f16.
fn exact_values(count: usize) -> Vec<f32> {
    (0..count).map(|i| (i as f32 - 7.0) * 0.25).collect()
}

/// FP8 E4M3 bytes and the values they encode.
const F8_CASES: [(u8, f32); 8] = [
    (0x00, 0.0),
    (0x38, 1.0),
    (0xC0, -2.0),
    (0x30, 0.5),
    (0x7E, 448.0),
    (0xFE, -448.0),
    (0x01, 0.001_953_125),
    (0x3C, 1.5),
];

/// One tensor of every supported dtype, a 0-d tensor and a fused `[E, 2I, H]` expert tensor.
fn every_dtype() -> Vec<Tensor> {
    let gate_up = exact_values(EXPERTS * 2 * INTERMEDIATE * HIDDEN);
    vec![
        Tensor::new("model.embed_tokens.weight", Dtype::BF16, &[6, 4], bf16_bytes(&exact_values(24))),
        Tensor::new(
            "model.layers.0.mlp.experts.gate_up_proj",
            Dtype::BF16,
            &[EXPERTS, 2 * INTERMEDIATE, HIDDEN],
            bf16_bytes(&gate_up),
        ),
        Tensor::new("model.layers.0.input_layernorm.weight", Dtype::F16, &[3, 5], f16_bytes(&exact_values(15))),
        Tensor::new(
            "model.layers.0.mlp.gate.weight",
            Dtype::F32,
            &[2, 3],
            f32_bytes(&[1.0, -2.5, 3.25, 1e-30, -7e20, 0.0]),
        ),
        Tensor::new("model.layers.0.mlp.experts.down_proj_weight_scale_2", Dtype::F32, &[], f32_bytes(&[0.125])),
        Tensor::patterned("rope.inv_freq", Dtype::F64, &[4], 3),
        Tensor::new(
            "model.layers.0.mlp.experts.down_proj",
            Dtype::F8E4M3,
            &[2, 4],
            F8_CASES.iter().map(|c| c.0).collect(),
        ),
        Tensor::patterned("u8", Dtype::U8, &[7], 5),
        Tensor::patterned("i8", Dtype::I8, &[2, 3], 7),
        Tensor::patterned("i16", Dtype::I16, &[5], 11),
        Tensor::patterned("i32", Dtype::I32, &[3], 13),
        Tensor::patterned("position_ids", Dtype::I64, &[2, 2], 17),
        Tensor::new("attention_mask", Dtype::Bool, &[5], vec![1, 0, 0, 1, 1]),
    ]
}

/// Writes `tensors` plus a config and a copied tokenizer into `target`.
fn write_checkpoint(
    target: &Path,
    tensors: &[Tensor],
    max_shard_bytes: u64,
) -> moe_quant_core::checkpoint::WriteSummary {
    let sources = temp_dir();
    let tokenizer = sources.path().join("tokenizer.json");
    std::fs::write(&tokenizer, br#"{"version":"1.0"}"#).unwrap();
    let options = WriterOptions { max_shard_bytes, ..WriterOptions::default() };
    let mut writer = CheckpointWriter::create(target, options).unwrap();
    declare_and_write(&mut writer, tensors);
    writer.write_file("config.json", br#"{"model_type":"test"}"#).unwrap();
    writer.copy_file(&tokenizer, "tokenizer.json").unwrap();
    writer.copy_file(&tokenizer, "nested/tokenizer_copy.json").unwrap();
    writer.finish().unwrap()
}

/// Asserts that the checkpoint holds exactly `tensors`, byte for byte.
fn assert_same_tensors(checkpoint: &Checkpoint, tensors: &[Tensor]) {
    let read: BTreeSet<&str> = checkpoint.tensors().iter().map(|t| t.name.as_str()).collect();
    let written: BTreeSet<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(read, written);
    for t in tensors {
        let view = checkpoint.read(&t.name).unwrap();
        assert_eq!(view.name, t.name);
        assert_eq!(view.dtype, t.dtype, "{}", t.name);
        assert_eq!(view.shape, t.shape.as_slice(), "{}", t.name);
        assert_eq!(&*view.data, t.data.as_slice(), "{}", t.name);
        assert_eq!(checkpoint.info(&t.name).unwrap().end - checkpoint.info(&t.name).unwrap().start, t.data.len());
    }
}

fn assert_extra_files(dir: &Path) {
    assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), br#"{"model_type":"test"}"#);
    assert_eq!(std::fs::read(dir.join("tokenizer.json")).unwrap(), br#"{"version":"1.0"}"#);
    assert_eq!(std::fs::read(dir.join("nested/tokenizer_copy.json")).unwrap(), br#"{"version":"1.0"}"#);
}

fn safetensors_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".safetensors"))
        .collect()
}

#[test]
fn sharded_round_trip_keeps_every_dtype_byte_for_byte() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    let tensors = every_dtype();
    let summary = write_checkpoint(&target, &tensors, 64);
    let total: usize = tensors.iter().map(|t| t.data.len()).sum();

    assert!(summary.shard_count >= 3, "only {} shards", summary.shard_count);
    assert_eq!(summary.tensor_bytes, total as u64);
    let expected_shards: BTreeSet<String> =
        (1..=summary.shard_count).map(|k| format!("model-{k:05}-of-{:05}.safetensors", summary.shard_count)).collect();
    assert_eq!(safetensors_files(&target), expected_shards);
    assert!(!target.join(SINGLE_FILE).exists());
    for shard in &expected_shards {
        assert_eq!(summary.files.get(shard), Some(&std::fs::metadata(target.join(shard)).unwrap().len()));
    }
    assert!(summary.files.contains_key(INDEX_FILE));

    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(target.join(INDEX_FILE)).unwrap()).unwrap();
    assert_eq!(index["metadata"]["total_size"].as_u64(), Some(total as u64));
    let weight_map = index["weight_map"].as_object().unwrap();
    let mapped: BTreeSet<&str> = weight_map.keys().map(String::as_str).collect();
    assert_eq!(mapped, tensors.iter().map(|t| t.name.as_str()).collect());
    let used: BTreeSet<String> = weight_map.values().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(used, expected_shards);

    let checkpoint = Checkpoint::open(&target).unwrap();
    assert_same_tensors(&checkpoint, &tensors);
    assert_eq!(checkpoint.files().len(), summary.shard_count);
    assert_eq!(checkpoint.index_metadata().unwrap()["total_size"].as_u64(), Some(total as u64));
    for t in checkpoint.tensors() {
        assert_eq!(weight_map[&t.name].as_str(), Some(checkpoint.files()[t.file].name.as_str()), "{}", t.name);
    }
    assert_extra_files(&target);
}

#[test]
fn single_file_round_trip_has_no_index() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    let tensors = every_dtype();
    let summary = write_checkpoint(&target, &tensors, 1 << 30);

    assert_eq!(summary.shard_count, 1);
    assert_eq!(safetensors_files(&target), BTreeSet::from([SINGLE_FILE.to_string()]));
    assert!(!target.join(INDEX_FILE).exists());

    let checkpoint = Checkpoint::open(&target).unwrap();
    assert_same_tensors(&checkpoint, &tensors);
    assert_eq!(checkpoint.files().len(), 1);
    assert!(checkpoint.index_metadata().is_none());
    assert_eq!(checkpoint.files()[0].metadata.get("format").map(String::as_str), Some("pt"));
    assert_extra_files(&target);
}

#[test]
fn tensor_larger_than_a_shard_gets_a_shard_of_its_own() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    let tensors = vec![
        Tensor::patterned("a", Dtype::U8, &[10], 1),
        Tensor::patterned("big", Dtype::U8, &[100], 2),
        Tensor::patterned("c", Dtype::U8, &[10], 3),
    ];
    let summary = write_checkpoint(&target, &tensors, 32);
    assert_eq!(summary.shard_count, 3);
    let checkpoint = Checkpoint::open(&target).unwrap();
    assert_same_tensors(&checkpoint, &tensors);
    let files: BTreeSet<usize> = checkpoint.tensors().iter().map(|t| t.file).collect();
    assert_eq!(files.len(), 3);
}

#[test]
fn slice_first_reads_one_expert() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    let tensors = every_dtype();
    write_checkpoint(&target, &tensors, 1 << 30);
    let checkpoint = Checkpoint::open(&target).unwrap();
    let name = "model.layers.0.mlp.experts.gate_up_proj";
    let written = &tensors.iter().find(|t| t.name == name).unwrap().data;
    let whole = checkpoint.read(name).unwrap();
    assert_eq!(whole.view().numel(), EXPERTS * 2 * INTERMEDIATE * HIDDEN);

    let expert_bytes = 2 * INTERMEDIATE * HIDDEN * Dtype::BF16.size();
    let per_expert = 2 * INTERMEDIATE * HIDDEN;
    let values = exact_values(EXPERTS * per_expert);
    for expert in 0..EXPERTS {
        let expected = &written[expert * expert_bytes..(expert + 1) * expert_bytes];
        // Read alone (only that expert's bytes), and sliced from the whole tensor (shared, no copy).
        let read = checkpoint.read_slice_first(name, expert).unwrap();
        let sliced = whole.slice_first(expert).unwrap();
        for slice in [&read, &sliced] {
            assert_eq!(slice.shape, vec![2 * INTERMEDIATE, HIDDEN]);
            assert_eq!(slice.dtype, Dtype::BF16);
            assert_eq!(&*slice.data, expected);
            assert_eq!(slice.to_f32(), values[expert * per_expert..(expert + 1) * per_expert]);
        }
        assert_eq!(sliced.data.as_ptr(), whole.data[expert * expert_bytes..].as_ptr());
    }

    // After a read-ahead of the layer, every expert's slice shares the one buffer read ahead.
    checkpoint.prefetch(&["model.layers.0.mlp.experts."]);
    let first = checkpoint.read_slice_first(name, 0).unwrap();
    let last = checkpoint.read_slice_first(name, EXPERTS - 1).unwrap();
    assert_eq!(&*last.data, &written[(EXPERTS - 1) * expert_bytes..]);
    assert_eq!(last.data.as_ptr(), first.data.as_ptr().wrapping_add((EXPERTS - 1) * expert_bytes));

    assert_error(&checkpoint.read_slice_first(name, EXPERTS).unwrap_err(), "E_TENSOR_SHAPE", &[name]);
    assert_error(&whole.slice_first(EXPERTS).unwrap_err(), "E_TENSOR_SHAPE", &[name]);
    let scalar = "model.layers.0.mlp.experts.down_proj_weight_scale_2";
    assert_error(&checkpoint.read_slice_first(scalar, 0).unwrap_err(), "E_TENSOR_SHAPE", &["down_proj_weight_scale_2"]);
}

#[test]
fn read_ahead_hands_out_each_tensor_once_with_the_stored_bytes() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    let tensors = every_dtype();
    // Small shards, so the read-ahead spans several files.
    write_checkpoint(&target, &tensors, 64);
    let checkpoint = Checkpoint::open(&target).unwrap();
    let layer: Vec<&Tensor> = tensors.iter().filter(|t| t.name.starts_with("model.layers.0.")).collect();
    assert!(layer.len() > 3);
    checkpoint.prefetch(&["model.layers.0."]);
    assert_eq!(checkpoint.prefetched(), layer.len());
    for t in &layer {
        assert_eq!(&*checkpoint.read(&t.name).unwrap().data, &t.data[..], "{}", t.name);
    }
    assert_eq!(checkpoint.prefetched(), 0, "every tensor read ahead was handed out");
    // Read again: straight from the file, same bytes.
    for t in &layer {
        assert_eq!(&*checkpoint.read(&t.name).unwrap().data, &t.data[..]);
    }
    // A new read-ahead forgets what the previous one held.
    checkpoint.prefetch(&["model.layers.0."]);
    checkpoint.prefetch(&["model.embed_tokens."]);
    assert_eq!(checkpoint.prefetched(), 1);
    assert_same_tensors(&checkpoint, &tensors);

    // Asked again for the same tensors before any was taken, the read-ahead goes on: an expert slice (which
    // leaves the fused tensor's bytes in place) shares the very buffer read the first time. Once a tensor was
    // taken, the same request starts over and reads into a new buffer.
    let first = ["model.embed_tokens.", "model.layers.0."];
    let fused = "model.layers.0.mlp.experts.gate_up_proj";
    checkpoint.prefetch(&first);
    let wanted = checkpoint.prefetched();
    assert_eq!(wanted, layer.len() + 1);
    let before = checkpoint.read_slice_first(fused, 0).unwrap();
    checkpoint.prefetch(&first);
    assert_eq!(checkpoint.prefetched(), wanted);
    assert_eq!(checkpoint.read_slice_first(fused, 0).unwrap().data.as_ptr(), before.data.as_ptr());
    checkpoint.read("model.layers.0.mlp.gate.weight").unwrap();
    assert_eq!(checkpoint.prefetched(), wanted - 1);
    checkpoint.prefetch(&first);
    assert_eq!(checkpoint.prefetched(), wanted);
    let again = checkpoint.read_slice_first(fused, 0).unwrap();
    assert_ne!(again.data.as_ptr(), before.data.as_ptr());
    assert_eq!(&*again.data, &*before.data);
    assert_same_tensors(&checkpoint, &tensors);
}

#[test]
fn a_read_ahead_buffer_is_reused_once_its_bytes_are_dropped_and_holds_only_the_new_bytes() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    // The second layer's tensor is smaller: its read fits the first one's buffer, whose tail then holds stale bytes.
    let tensors = [
        Tensor::patterned("model.layers.0.mlp.gate.weight", Dtype::BF16, &[64, 64], 3),
        Tensor::patterned("model.layers.1.mlp.gate.weight", Dtype::BF16, &[24, 40], 29),
    ];
    let (first, second) = (&tensors[0], &tensors[1]);
    assert_ne!(&first.data[..second.data.len()], &second.data[..]);
    write_checkpoint(&target, &tensors, 1 << 30);
    let checkpoint = Checkpoint::open(&target).unwrap();
    checkpoint.prefetch(&["model.layers.0."]);
    let read = checkpoint.read(&first.name).unwrap();
    assert_eq!(&*read.data, &first.data[..]);
    let buffer = read.data.as_ptr() as usize;
    drop(read);
    // Its bytes dropped, the buffer serves the next read-ahead, which hands out exactly the bytes it read.
    checkpoint.prefetch(&["model.layers.1."]);
    let reused = checkpoint.read(&second.name).unwrap();
    assert_eq!(reused.data.as_ptr() as usize, buffer);
    assert_eq!(&*reused.data, &second.data[..]);
    // While those bytes are held, the same read goes to another buffer.
    checkpoint.prefetch(&["model.layers.1."]);
    let again = checkpoint.read(&second.name).unwrap();
    assert_ne!(again.data.as_ptr() as usize, buffer);
    assert_eq!(&*again.data, &second.data[..]);
}

#[test]
fn a_queued_read_ahead_keeps_what_the_current_one_holds_and_release_forgets_a_prefix() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    let tensors = every_dtype();
    write_checkpoint(&target, &tensors, 64);
    let checkpoint = Checkpoint::open(&target).unwrap();
    let count = |prefix: &str| tensors.iter().filter(|t| t.name.starts_with(prefix)).count();
    let (layer, rope) = (count("model.layers.0."), count("rope."));
    let embed = "model.embed_tokens.weight";
    checkpoint.prefetch(&["model.embed_tokens."]);
    // Queued behind it: both are held, and asking again for tensors already queued reads nothing twice.
    checkpoint.prefetch_next(&["model.layers.0."]);
    checkpoint.prefetch_next(&["model.layers.0.", "rope."]);
    assert_eq!(checkpoint.prefetched(), 1 + layer + rope);
    assert_eq!(&*checkpoint.read(embed).unwrap().data, &tensors[0].data[..]);
    assert_eq!(checkpoint.prefetched(), layer + rope);
    // An expert slice leaves its fused tensor held; releasing the layer forgets it and the rest of the layer.
    let fused = "model.layers.0.mlp.experts.gate_up_proj";
    let slice = checkpoint.read_slice_first(fused, 1).unwrap();
    let gate = "model.layers.0.mlp.gate.weight";
    checkpoint.read(gate).unwrap();
    assert_eq!(checkpoint.prefetched(), layer + rope - 1);
    checkpoint.release_read_ahead(&["model.layers.0."]);
    assert_eq!(checkpoint.prefetched(), rope);
    // Read again after the release: from the file, the same bytes.
    assert_eq!(&*checkpoint.read_slice_first(fused, 1).unwrap().data, &*slice.data);
    assert_ne!(checkpoint.read_slice_first(fused, 1).unwrap().data.as_ptr(), slice.data.as_ptr());
    let written = |name: &str| tensors.iter().find(|t| t.name == name).unwrap().data.clone();
    assert_eq!(&*checkpoint.read("rope.inv_freq").unwrap().data, &written("rope.inv_freq")[..]);
    assert_eq!(checkpoint.prefetched(), 0);
    // With nothing held, a queued read starts at once.
    checkpoint.prefetch_next(&["model.layers.0."]);
    assert_eq!(checkpoint.prefetched(), layer);
    assert_same_tensors(&checkpoint, &tensors);
}

#[test]
fn a_file_that_changes_during_the_run_is_reported() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    let tensors = every_dtype();
    write_checkpoint(&target, &tensors, 1 << 30);
    let file = target.join(SINGLE_FILE);
    let name = "model.layers.0.mlp.experts.gate_up_proj";

    // Truncated: reads past the new end, and the final check, fail with the file named.
    let checkpoint = Checkpoint::open(&target).unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(size / 2).unwrap();
    let last = checkpoint.tensors().iter().max_by_key(|t| t.end).unwrap().name.clone();
    assert_error(&checkpoint.read(&last).unwrap_err(), "E_INPUT_CHANGED", &[SINGLE_FILE, "ended before byte"]);
    assert_error(&checkpoint.check_unchanged().unwrap_err(), "E_INPUT_CHANGED", &["size went from"]);
    // A read-ahead over a truncated file hands nothing out; the direct read reports it.
    checkpoint.prefetch(&["model."]);
    assert_error(&checkpoint.read(&last).unwrap_err(), "E_INPUT_CHANGED", &[SINGLE_FILE]);

    // Modified in place with the same size: the modification time gives it away.
    let target = tmp.path().join("again");
    write_checkpoint(&target, &tensors, 1 << 30);
    let file = target.join(SINGLE_FILE);
    let checkpoint = Checkpoint::open(&target).unwrap();
    let before = std::fs::metadata(&file).unwrap().modified().unwrap();
    let handle = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    handle.set_modified(before + std::time::Duration::from_secs(5)).unwrap();
    assert_error(&checkpoint.read(name).unwrap_err(), "E_INPUT_CHANGED", &["modified"]);
    assert_error(&checkpoint.check_unchanged().unwrap_err(), "E_INPUT_CHANGED", &["modified"]);
}

#[test]
fn to_f32_returns_the_written_float_values() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    write_checkpoint(&target, &every_dtype(), 64);
    let checkpoint = Checkpoint::open(&target).unwrap();

    assert_eq!(checkpoint.read("model.embed_tokens.weight").unwrap().to_f32(), exact_values(24));
    assert_eq!(checkpoint.read("model.layers.0.input_layernorm.weight").unwrap().to_f32(), exact_values(15));
    assert_eq!(
        checkpoint.read("model.layers.0.mlp.gate.weight").unwrap().to_f32(),
        vec![1.0, -2.5, 3.25, 1e-30, -7e20, 0.0]
    );
    assert_eq!(checkpoint.read("model.layers.0.mlp.experts.down_proj_weight_scale_2").unwrap().to_f32(), vec![0.125]);
    let f8: Vec<f32> = F8_CASES.iter().map(|c| c.1).collect();
    assert_eq!(checkpoint.read("model.layers.0.mlp.experts.down_proj").unwrap().to_f32(), f8);
    assert_eq!(checkpoint.read("attention_mask").unwrap().to_f32(), vec![1.0, 0.0, 0.0, 1.0, 1.0]);
}

#[test]
fn unknown_tensor_is_reported_by_name() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    write_checkpoint(&target, &every_dtype(), 1 << 30);
    let checkpoint = Checkpoint::open(&target).unwrap();
    assert!(!checkpoint.contains("lm_head.weight"));
    assert_error(&expect_err(checkpoint.read("lm_head.weight")), "E_TENSOR_NOT_FOUND", &["lm_head.weight"]);
}

#[test]
fn write_rejects_data_that_does_not_fill_the_shape() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    let mut writer = CheckpointWriter::create(&target, WriterOptions::default()).unwrap();
    let w = Tensor::patterned("w", Dtype::BF16, &[2, 3], 1);
    writer.declare(&[w.layout()]).unwrap();
    let error = writer.write("w", Dtype::BF16, &[2, 3], &[0; 11]).unwrap_err();
    assert_error(&error, "E_TENSOR_SHAPE", &["w", "11 bytes", "12 bytes"]);
    // A shape whose size overflows must be an error, not an arithmetic panic.
    let error = writer.write("huge", Dtype::F32, &[1 << 40, 1 << 40], &[0; 4]).unwrap_err();
    assert_error(&error, "E_TENSOR_SHAPE", &["huge", "more than usize::MAX bytes"]);
    // Neither refusal ends the writer, and a tensor is written once.
    w.write_to(&mut writer).unwrap();
    assert_error(&w.write_to(&mut writer).unwrap_err(), "E_INTERNAL", &["w was written twice"]);
    writer.finish().unwrap();
    assert_eq!(&*Checkpoint::open(&target).unwrap().read("w").unwrap().data, &w.data[..]);
    // Nor can such a shape be declared.
    let mut writer = CheckpointWriter::create(tmp.path().join("huge"), WriterOptions::default()).unwrap();
    let huge = TensorLayout { name: "huge".into(), dtype: Dtype::F32, shape: vec![1 << 40, 1 << 40] };
    assert_error(&writer.declare(&[huge]).unwrap_err(), "E_TENSOR_SHAPE", &["huge"]);
    assert!(!writer.tmp_dir().exists());
}

#[test]
fn a_tensor_written_in_parts_is_the_tensor_and_parts_that_miss_its_length_discard_the_output() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    let mut writer = CheckpointWriter::create(&target, WriterOptions::default()).unwrap();
    let (w, v) = (Tensor::patterned("w", Dtype::BF16, &[5, 3], 7), Tensor::patterned("v", Dtype::U8, &[4], 2));
    writer.declare(&[w.layout(), v.layout()]).unwrap();
    // Parts of uneven lengths, an empty one among them.
    let parts = writer.write_parts("w", w.dtype, &w.shape, |put| {
        [0..7, 7..7, 7..24, 24..30].into_iter().try_for_each(|range| put(&w.data[range]))
    });
    parts.unwrap();
    assert_error(&w.write_to(&mut writer).unwrap_err(), "E_INTERNAL", &["w was written twice"]);
    v.write_to(&mut writer).unwrap();
    writer.finish().unwrap();
    let written = Checkpoint::open(&target).unwrap();
    assert_eq!(&*written.read("w").unwrap().data, &w.data[..]);
    assert_eq!(&*written.read("v").unwrap().data, &v.data[..]);

    // Too many bytes, too few, or a failing source: the output is discarded (its place was taken).
    let cases: [(&str, &[usize], &[&str]); 3] = [
        ("long", &[30, 1], &["w", "31 bytes", "30 bytes"]),
        ("short", &[10, 19], &["w", "29 bytes", "30 bytes"]),
        ("failing", &[], &["the source failed"]),
    ];
    for (case, lengths, needles) in cases {
        let mut writer = CheckpointWriter::create(tmp.path().join(case), WriterOptions::default()).unwrap();
        writer.declare(&[w.layout()]).unwrap();
        let error = writer
            .write_parts("w", w.dtype, &w.shape, |put| {
                if lengths.is_empty() {
                    return Err(moe_quant_core::Error::internal("the source failed"));
                }
                lengths.iter().try_for_each(|&len| put(&vec![1; len]))
            })
            .unwrap_err();
        let code = if lengths.is_empty() { "E_INTERNAL" } else { "E_TENSOR_SHAPE" };
        assert_error(&error, code, needles);
        assert!(!writer.tmp_dir().exists(), "{case}: the temporary output is left");
        assert_error(&w.write_to(&mut writer).unwrap_err(), "E_INTERNAL", &["used after it failed"]);
    }
}

// ---- writer atomicity and refusals -------------------------------------------------------------------

/// Entries of `dir` whose names carry the writer's temporary marker.
fn tmp_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".moe-quant-tmp-"))
        .collect()
}

#[test]
fn target_appears_only_on_finish() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    let options = WriterOptions { max_shard_bytes: 16, ..WriterOptions::default() };
    let mut writer = CheckpointWriter::create(&target, options).unwrap();
    let tmp_dir = writer.tmp_dir().to_path_buf();
    assert_eq!(tmp_dir.parent(), Some(tmp.path()));
    assert!(tmp_dir.file_name().unwrap().to_str().unwrap().starts_with(".out.moe-quant-tmp-"));
    let tensors: Vec<Tensor> = (0..4u8).map(|k| Tensor::patterned(&format!("t{k}"), Dtype::U8, &[16], k)).collect();
    declare_and_write(&mut writer, &tensors);
    writer.write_file("config.json", b"{}").unwrap();
    assert!(!target.exists(), "target exists before finish");
    assert_eq!(
        std::fs::read_dir(&tmp_dir).unwrap().count(),
        5,
        "four shards and the config, in the temporary directory"
    );
    writer.finish().unwrap();
    assert!(target.join(INDEX_FILE).is_file());
    assert!(!tmp_dir.exists());
    assert!(tmp_entries(tmp.path()).is_empty());
}

#[test]
fn dropping_an_unfinished_writer_leaves_nothing() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    let options = WriterOptions { max_shard_bytes: 16, ..WriterOptions::default() };
    let mut writer = CheckpointWriter::create(&target, options).unwrap();
    let tensors: Vec<Tensor> = (0..4u8).map(|k| Tensor::patterned(&format!("t{k}"), Dtype::U8, &[16], k)).collect();
    declare_and_write(&mut writer, &tensors);
    writer.write_file("config.json", b"{}").unwrap();
    let tmp_dir = writer.tmp_dir().to_path_buf();
    assert!(tmp_dir.is_dir());
    drop(writer);
    assert!(!target.exists());
    assert!(!tmp_dir.exists());
    assert!(tmp_entries(tmp.path()).is_empty(), "left {:?}", tmp_entries(tmp.path()));
}

/// A small valid single-file checkpoint in `dir`.
fn small_input(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    write_valid(&dir.join(SINGLE_FILE), &[Tensor::patterned("w", Dtype::F32, &[2, 2], 1)]);
    std::fs::write(dir.join("config.json"), "{}").unwrap();
}

fn create_err(target: &Path, options: WriterOptions) -> moe_quant_core::Error {
    expect_err(CheckpointWriter::create(target, options))
}

#[test]
fn refuses_to_write_into_the_input_directory() {
    let tmp = temp_dir();
    let input = tmp.path().join("model");
    small_input(&input);
    let before = std::fs::read(input.join(SINGLE_FILE)).unwrap();
    let options = WriterOptions { input_dir: Some(input.clone()), overwrite: true, ..WriterOptions::default() };
    assert_error(&create_err(&input, options.clone()), "E_OUTPUT_INVALID", &["model"]);
    // Spelled differently: relative components and a trailing dot.
    assert_error(&create_err(&input.join("sub/.."), options.clone()), "E_OUTPUT_INVALID", &[]);
    assert_error(&create_err(&input.join("."), options), "E_OUTPUT_INVALID", &["model"]);
    assert_eq!(std::fs::read(input.join(SINGLE_FILE)).unwrap(), before);
    assert!(tmp_entries(tmp.path()).is_empty());
    assert!(tmp_entries(&input).is_empty());
}

#[test]
fn refuses_to_write_inside_or_around_the_input() {
    let tmp = temp_dir();
    let input = tmp.path().join("model");
    small_input(&input);
    let options = WriterOptions { input_dir: Some(input.clone()), overwrite: true, ..WriterOptions::default() };
    let inside = input.join("quantized");
    assert_error(&create_err(&inside, options.clone()), "E_OUTPUT_INVALID", &["quantized"]);
    assert_error(&create_err(&input.join("a/b/c"), options.clone()), "E_OUTPUT_INVALID", &["c"]);
    assert!(!inside.exists());
    // The output directory would contain the input.
    assert_error(&create_err(tmp.path(), options.clone()), "E_OUTPUT_INVALID", &["model"]);
    // Through a symlink to the input.
    #[cfg(unix)]
    {
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        assert_error(&create_err(&link.join("quantized"), options), "E_OUTPUT_INVALID", &["quantized"]);
    }
    assert!(tmp_entries(&input).is_empty());
}

#[test]
fn refuses_a_non_empty_directory_without_overwrite() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep.txt"), "mine").unwrap();
    assert_error(&create_err(&target, WriterOptions::default()), "E_OUTPUT_INVALID", &["out", "overwrite"]);
    assert_eq!(std::fs::read_to_string(target.join("keep.txt")).unwrap(), "mine");
    // A file where the directory should be.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let options = WriterOptions { overwrite: true, ..WriterOptions::default() };
    assert_error(&create_err(&file, options), "E_OUTPUT_INVALID", &["file"]);
    assert!(tmp_entries(tmp.path()).is_empty());
}

#[test]
fn an_empty_directory_is_used_without_overwrite() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    std::fs::create_dir(&target).unwrap();
    let mut writer = CheckpointWriter::create(&target, WriterOptions::default()).unwrap();
    declare_and_write(&mut writer, &[Tensor::new("w", Dtype::U8, &[3], vec![1, 2, 3])]);
    writer.finish().unwrap();
    assert_eq!(Checkpoint::open(&target).unwrap().read("w").unwrap().data[..], [1, 2, 3]);
}

#[test]
fn overwrite_replaces_a_non_empty_directory() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("stale.txt"), "old").unwrap();
    std::fs::write(target.join(SINGLE_FILE), "not a checkpoint").unwrap();
    let options = WriterOptions { overwrite: true, ..WriterOptions::default() };
    let mut writer = CheckpointWriter::create(&target, options).unwrap();
    declare_and_write(&mut writer, &[Tensor::new("w", Dtype::I32, &[2], vec![1, 0, 0, 0, 2, 0, 0, 0])]);
    // The old output stays intact until finish.
    assert_eq!(std::fs::read_to_string(target.join("stale.txt")).unwrap(), "old");
    writer.finish().unwrap();
    assert!(!target.join("stale.txt").exists());
    assert_eq!(Checkpoint::open(&target).unwrap().read("w").unwrap().to_f32(), vec![1.0, 2.0]);
    assert!(tmp_entries(tmp.path()).is_empty(), "left {:?}", tmp_entries(tmp.path()));
}

/// A writer for `target` holding one small tensor, ready to finish.
fn ready_writer(target: &Path, overwrite: bool) -> CheckpointWriter {
    let mut writer = CheckpointWriter::create(target, WriterOptions { overwrite, ..WriterOptions::default() }).unwrap();
    declare_and_write(&mut writer, &[Tensor::new("w", Dtype::U8, &[3], vec![7, 8, 9])]);
    writer
}

#[test]
fn an_output_that_appears_during_the_run_is_left_alone_without_overwrite() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    // Another run's output (or anything a user put there) appears between the start and the publish.
    let writer = ready_writer(&target, false);
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("theirs.txt"), "theirs").unwrap();
    assert_error(&expect_err(writer.finish()), "E_OUTPUT_INVALID", &["out", "appeared", "nothing was written"]);
    assert_eq!(std::fs::read_to_string(target.join("theirs.txt")).unwrap(), "theirs");
    assert!(tmp_entries(tmp.path()).is_empty(), "left {:?}", tmp_entries(tmp.path()));

    // The same with a file, and with two writers racing for one target: the first to finish wins.
    let file_target = tmp.path().join("file-out");
    let writer = ready_writer(&file_target, false);
    std::fs::write(&file_target, "a file").unwrap();
    assert_error(&expect_err(writer.finish()), "E_OUTPUT_INVALID", &["file-out", "appeared"]);
    assert_eq!(std::fs::read_to_string(&file_target).unwrap(), "a file");
    let raced = tmp.path().join("raced");
    let (first, second) = (ready_writer(&raced, false), ready_writer(&raced, false));
    first.finish().unwrap();
    assert_error(&expect_err(second.finish()), "E_OUTPUT_INVALID", &["raced", "appeared"]);
    assert_eq!(Checkpoint::open(&raced).unwrap().read("w").unwrap().data[..], [7, 8, 9]);
    assert!(tmp_entries(tmp.path()).is_empty(), "left {:?}", tmp_entries(tmp.path()));

    // An empty directory appearing is no loss: it is replaced.
    let empty = tmp.path().join("empty");
    let writer = ready_writer(&empty, false);
    std::fs::create_dir(&empty).unwrap();
    writer.finish().unwrap();
    assert!(empty.join(SINGLE_FILE).is_file());
}

#[test]
fn overwrite_replaces_only_a_directory_at_publish_time() {
    let tmp = temp_dir();
    // A directory that appeared during the run is replaced, in one step.
    let target = tmp.path().join("out");
    let writer = ready_writer(&target, true);
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("old.txt"), "old").unwrap();
    writer.finish().unwrap();
    assert!(!target.join("old.txt").exists());
    assert_eq!(Checkpoint::open(&target).unwrap().read("w").unwrap().data[..], [7, 8, 9]);
    // A file or a symbolic link that took the directory's place is not deleted.
    let replaced = tmp.path().join("gone");
    let writer = ready_writer(&replaced, true);
    std::fs::write(&replaced, "a file").unwrap();
    assert_error(&expect_err(writer.finish()), "E_OUTPUT_INVALID", &["gone", "a file", "nothing was written"]);
    assert_eq!(std::fs::read_to_string(&replaced).unwrap(), "a file");
    #[cfg(unix)]
    {
        let linked = tmp.path().join("linked");
        let writer = ready_writer(&linked, true);
        std::os::unix::fs::symlink(&target, &linked).unwrap();
        assert_error(&expect_err(writer.finish()), "E_OUTPUT_INVALID", &["linked", "symbolic link"]);
        assert_eq!(Checkpoint::open(&target).unwrap().read("w").unwrap().data[..], [7, 8, 9]);
    }
    assert!(tmp_entries(tmp.path()).is_empty(), "left {:?}", tmp_entries(tmp.path()));
}

#[cfg(unix)]
#[test]
fn a_symbolic_link_output_is_written_where_it_points_and_a_dangling_one_is_refused() {
    let tmp = temp_dir();
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    ready_writer(&link, false).finish().unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays");
    assert!(real.join(SINGLE_FILE).is_file());

    let dangling = tmp.path().join("dangling");
    std::os::unix::fs::symlink(tmp.path().join("nowhere"), &dangling).unwrap();
    let error = create_err(&dangling, WriterOptions::default());
    assert_error(&error, "E_OUTPUT_INVALID", &["dangling", "symbolic link", "nowhere"]);
    assert!(tmp_entries(tmp.path()).is_empty());
}

#[test]
fn long_output_names_work_up_to_the_file_system_limit() {
    let tmp = temp_dir();
    for name in ["a".repeat(240), "é".repeat(127), "b".repeat(255)] {
        let target = tmp.path().join(&name);
        let writer = ready_writer(&target, false);
        assert!(writer.tmp_dir().file_name().unwrap().len() <= 255);
        writer.finish().unwrap();
        assert!(target.join(SINGLE_FILE).is_file(), "{} bytes", name.len());
    }
    let too_long = tmp.path().join("c".repeat(256));
    assert_error(&create_err(&too_long, WriterOptions::default()), "E_OUTPUT_INVALID", &["256 bytes", "255"]);
    assert!(tmp_entries(tmp.path()).is_empty());
}

#[test]
fn stale_temp_dir_of_a_dead_process_is_removed() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    // pid_max is at most 2^22 on Linux, so this process cannot exist.
    let stale = tmp.path().join(".out.moe-quant-tmp-999999999.0");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("shard-0"), "half written").unwrap();
    let stale_replaced = tmp.path().join(".out.moe-quant-tmp-999999999.replaced");
    std::fs::create_dir(&stale_replaced).unwrap();
    // Another target's temp dir and an unrelated hidden dir are left alone.
    let other = tmp.path().join(".other.moe-quant-tmp-999999999.0");
    std::fs::create_dir(&other).unwrap();
    let unrelated = tmp.path().join(".out.cache");
    std::fs::create_dir(&unrelated).unwrap();

    let writer = CheckpointWriter::create(&target, WriterOptions::default()).unwrap();
    assert!(!stale.exists());
    assert!(!stale_replaced.exists());
    assert!(other.exists());
    assert!(unrelated.exists());
    assert!(writer.tmp_dir().exists());
    drop(writer);
}

#[test]
fn temp_dir_of_a_live_process_is_kept() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    let first = CheckpointWriter::create(&target, WriterOptions::default()).unwrap();
    let second = CheckpointWriter::create(&target, WriterOptions::default()).unwrap();
    assert!(first.tmp_dir().exists(), "a second writer removed the first one's temp dir");
    assert_ne!(first.tmp_dir(), second.tmp_dir());
}

// ---- header listing -----------------------------------------------------------------------------------

#[test]
fn inspect_headers_lists_tensors_files_and_other_files() {
    let tmp = temp_dir();
    let dir = tmp.path();
    let expert_shape = [EXPERTS, 2 * INTERMEDIATE, HIDDEN];
    write_valid(
        &dir.join("model-00001-of-00002.safetensors"),
        &[
            Tensor::patterned("model.embed_tokens.weight", Dtype::BF16, &[8, 4], 1),
            Tensor::patterned("model.layers.0.mlp.gate.weight", Dtype::F32, &[EXPERTS, HIDDEN], 2),
        ],
    );
    write_valid(
        &dir.join("model-00002-of-00002.safetensors"),
        &[
            Tensor::patterned("model.layers.0.mlp.experts.gate_up_proj", Dtype::BF16, &expert_shape, 3),
            Tensor::patterned("model.layers.0.mlp.experts.down_proj_scale", Dtype::F32, &[], 4),
        ],
    );
    write_index(
        dir,
        &[
            ("model.embed_tokens.weight", "model-00001-of-00002.safetensors"),
            ("model.layers.0.mlp.gate.weight", "model-00001-of-00002.safetensors"),
            ("model.layers.0.mlp.experts.gate_up_proj", "model-00002-of-00002.safetensors"),
            ("model.layers.0.mlp.experts.down_proj_scale", "model-00002-of-00002.safetensors"),
        ],
    );
    let config = r#"{"model_type":"qwen3_moe","num_experts":4}"#;
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    std::fs::create_dir(dir.join("original")).unwrap();

    let listing = inspect_headers(dir).unwrap();
    assert_eq!(listing.config, config);
    let files: BTreeMap<&str, u64> = listing.files.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    assert_eq!(files.len(), 2);
    for (name, size) in &files {
        assert_eq!(*size, std::fs::metadata(dir.join(name)).unwrap().len());
    }

    let tensors: BTreeMap<&str, _> = listing.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    assert_eq!(tensors.len(), 4);
    let expected = [
        ("model.embed_tokens.weight", "BF16", vec![8, 4], "model-00001-of-00002.safetensors", 64),
        ("model.layers.0.mlp.gate.weight", "F32", vec![EXPERTS, HIDDEN], "model-00001-of-00002.safetensors", 80),
        (
            "model.layers.0.mlp.experts.gate_up_proj",
            "BF16",
            expert_shape.to_vec(),
            "model-00002-of-00002.safetensors",
            240,
        ),
        ("model.layers.0.mlp.experts.down_proj_scale", "F32", vec![], "model-00002-of-00002.safetensors", 4),
    ];
    for (name, dtype, shape, file, bytes) in expected {
        let t = tensors[name];
        assert_eq!((t.dtype.as_str(), &t.shape, t.file.as_str(), t.bytes), (dtype, &shape, file, bytes), "{name}");
    }

    assert_eq!(listing.other_files, vec!["config.json".to_string(), "tokenizer.json".to_string()]);
}

#[test]
fn inspect_headers_on_a_single_file_checkpoint() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    write_checkpoint(&target, &every_dtype(), 1 << 30);
    let listing = inspect_headers(&target).unwrap();
    assert_eq!(listing.files.len(), 1);
    assert_eq!(listing.files[0].0, SINGLE_FILE);
    assert_eq!(listing.tensors.len(), every_dtype().len());
    assert_eq!(listing.other_files, vec!["config.json".to_string(), "tokenizer.json".to_string()]);
    let dtypes: BTreeSet<&str> = listing.tensors.iter().map(|t| t.dtype.as_str()).collect();
    assert_eq!(dtypes, Dtype::SUPPORTED.split(", ").collect());
}

#[cfg(unix)]
#[test]
fn shards_get_the_permissions_of_any_new_file() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    let mut writer = CheckpointWriter::create(&target, WriterOptions::default()).unwrap();
    declare_and_write(&mut writer, &[Tensor::new("a", Dtype::F32, &[2], vec![0; 8])]);
    writer.write_file("config.json", b"{}").unwrap();
    writer.finish().unwrap();
    let shard = std::fs::metadata(target.join("model.safetensors")).unwrap().permissions().mode() & 0o777;
    let config = std::fs::metadata(target.join("config.json")).unwrap().permissions().mode() & 0o777;
    assert_eq!(shard, config, "shard {shard:o} vs config {config:o}");
}
