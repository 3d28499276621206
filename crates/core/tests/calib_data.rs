//! Calibration data loading: JSONL, plain text and pre-tokenized ids become `[rows, seq_len]` batches cut from
//! one token stream (checked against the `tokenizers` crate and ids pinned from Python's `tokenizers`), and
//! every malformed input fails with its stable code and a message naming the file, line or id.

// clippy.toml's allow-*-in-tests covers `#[test]` functions only; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use common::{assert_error, expect_err, temp_dir};
use moe_quant_core::calib::data::{load_calibration, Batch, CalibrationOptions, CalibrationSet, CalibrationSource};
use tokenizers::Tokenizer;

const VOCAB: usize = 256;
/// `<|endoftext|>`, the fixture's EOS (tokenizer_config.json), put between documents.
const EOS: u32 = 0;

fn fixture_hub() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/qwen3_moe/hub")
}

/// Loads calibration sequences for a model of `VOCAB` tokens, never cancelled.
fn load(
    dir: &Path,
    source: &CalibrationSource,
    options: &CalibrationOptions,
) -> moe_quant_core::Result<CalibrationSet> {
    load_calibration(dir, source, options, VOCAB, &AtomicBool::new(false))
}

/// A model directory holding the fixture's tokenizer.json and tokenizer_config.json.
fn model_dir(root: &Path) -> PathBuf {
    let dir = root.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture_hub().join(name), dir.join(name)).unwrap();
    }
    dir
}

/// What the windowing rule should produce: each document encoded without special tokens, EOS between them.
fn expected_stream(documents: &[&str], separator: Option<u32>) -> Vec<u32> {
    let tokenizer = Tokenizer::from_file(fixture_hub().join("tokenizer.json")).unwrap();
    let mut stream = Vec::new();
    for document in documents {
        let ids = tokenizer.encode(*document, false).unwrap().get_ids().to_vec();
        if ids.is_empty() {
            continue;
        }
        if let (Some(separator), false) = (separator, stream.is_empty()) {
            stream.push(separator);
        }
        stream.extend(ids);
    }
    stream
}

fn options(samples: usize, seq_len: usize, batch_size: usize) -> CalibrationOptions {
    CalibrationOptions { samples, seq_len, batch_size }
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn jsonl(texts: &[&str]) -> String {
    texts.iter().map(|text| format!("{}\n", serde_json::json!({ "text": text, "meta": 1 }))).collect()
}

fn all_ids(set: &CalibrationSet) -> Vec<u32> {
    set.batches.iter().flat_map(|batch| batch.ids.iter().copied()).collect()
}

fn batch_rows(set: &CalibrationSet) -> Vec<usize> {
    set.batches.iter().map(|batch| batch.rows).collect()
}

/// Every batch is a full `[rows, seq_len]` block.
fn assert_well_formed(set: &CalibrationSet, seq_len: usize) {
    for batch in &set.batches {
        assert_eq!(batch.seq_len, seq_len);
        assert_eq!(batch.ids.len(), batch.rows * seq_len);
        assert!(batch.rows > 0);
    }
}

const DOCUMENTS: [&str; 3] = [
    "Hello, world!",
    "The quick brown fox.",
    "Mixture of experts\nroute tokens to a few of many feed-forward networks.",
];

#[test]
fn rust_encoding_matches_pinned_python_ids() {
    // Pinned from Python: Tokenizer.from_file(...).encode(text, add_special_tokens=False).ids (Python tokenizers 0.23.3).
    let tmp = temp_dir();
    let dir = model_dir(tmp.path());
    let text = write(tmp.path(), "hello.txt", "Hello, world!\n");
    let set = load(&dir, &CalibrationSource::Text { path: text }, &options(1, 9, 1)).unwrap();
    assert_eq!(all_ids(&set), [40, 180, 76, 79, 12, 110, 131, 226, 1]);

    let file = write(tmp.path(), "fox.jsonl", jsonl(&["The quick brown fox."]));
    let set = load(&dir, &CalibrationSource::Jsonl { path: file }, &options(1, 10, 1)).unwrap();
    assert_eq!(all_ids(&set), [157, 240, 73, 146, 127, 250, 119, 79, 88, 14]);
}

#[test]
fn jsonl_documents_are_joined_by_eos_and_cut_into_windows() {
    let tmp = temp_dir();
    let dir = model_dir(tmp.path());
    // Blank lines (also whitespace-only and CRLF) are skipped; other fields are ignored.
    let contents = format!("{}\n  \r\n{}", jsonl(&DOCUMENTS[..2]), jsonl(&DOCUMENTS[2..]).replace('\n', "\r\n"));
    let file = write(tmp.path(), "calib.jsonl", contents);
    let stream = expected_stream(&DOCUMENTS, Some(EOS));
    let seq_len = 8;
    let windows = stream.len() / seq_len;
    assert!(windows >= 5, "fixture text too short: {} tokens", stream.len());

    let set = load(&dir, &CalibrationSource::Jsonl { path: file }, &options(100, seq_len, 2)).unwrap();
    assert_well_formed(&set, seq_len);
    assert_eq!(all_ids(&set), stream[..windows * seq_len]);
    assert_eq!(set.sample_count(), windows);
    assert_eq!(set.token_count(), windows * seq_len);
    assert_eq!(set.requested_samples, 100);
    let mut rows = vec![2; windows / 2];
    if windows % 2 == 1 {
        rows.push(1);
    }
    assert_eq!(batch_rows(&set), rows);
    // The separator sits right after the first document's tokens.
    let first = expected_stream(&DOCUMENTS[..1], None).len();
    assert_eq!(all_ids(&set)[first], EOS);
}

#[test]
fn samples_caps_the_windows_and_batches_group_rows() {
    let tmp = temp_dir();
    let dir = model_dir(tmp.path());
    let file = write(tmp.path(), "calib.jsonl", jsonl(&DOCUMENTS));
    let stream = expected_stream(&DOCUMENTS, Some(EOS));
    let seq_len = 4;
    assert!(stream.len() / seq_len > 7);

    let set = load(&dir, &CalibrationSource::Jsonl { path: file }, &options(7, seq_len, 3)).unwrap();
    assert_well_formed(&set, seq_len);
    assert_eq!(batch_rows(&set), [3, 3, 1]);
    assert_eq!(set.sample_count(), 7);
    assert_eq!(set.token_count(), 28);
    assert_eq!(all_ids(&set), stream[..28]);
    let last: &Batch = &set.batches[2];
    assert_eq!(last.row(0).unwrap(), &stream[24..28]);
    assert_eq!(set.batches[1].row(2).unwrap(), &stream[20..24]);
    assert!(last.row(1).is_none());

    // A batch size larger than the windows gives one batch.
    let file = write(tmp.path(), "again.jsonl", jsonl(&DOCUMENTS));
    let set = load(&dir, &CalibrationSource::Jsonl { path: file }, &options(5, seq_len, usize::MAX)).unwrap();
    assert_eq!(batch_rows(&set), [5]);
}

#[test]
fn plain_text_splits_documents_on_blank_lines() {
    let tmp = temp_dir();
    let dir = model_dir(tmp.path());
    let contents = "\n\nHello, world!\r\nThe quick brown fox.\n \t \n\n\nMixture of experts\nroute tokens.\n\n";
    let file = write(tmp.path(), "calib.txt", contents);
    let documents = ["Hello, world!\nThe quick brown fox.", "Mixture of experts\nroute tokens."];
    let stream = expected_stream(&documents, Some(EOS));
    let seq_len = 5;
    let windows = stream.len() / seq_len;

    let set = load(&dir, &CalibrationSource::Text { path: file }, &options(64, seq_len, 4)).unwrap();
    assert_well_formed(&set, seq_len);
    assert_eq!(all_ids(&set), stream[..windows * seq_len]);
    assert_eq!(set.sample_count(), windows);
    assert_eq!(set.requested_samples, 64);
}

#[test]
fn separator_falls_back_to_generation_config_or_is_absent() {
    let tmp = temp_dir();
    let dir = tmp.path().join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture_hub().join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let file = write(tmp.path(), "calib.jsonl", jsonl(&DOCUMENTS[..2]));
    let seq_len = 3;

    // Only tokenizer.json: documents are concatenated as they are.
    let stream = expected_stream(&DOCUMENTS[..2], None);
    let set = load(&dir, &CalibrationSource::Jsonl { path: file.clone() }, &options(99, seq_len, 8)).unwrap();
    assert_eq!(all_ids(&set), stream[..stream.len() / seq_len * seq_len]);

    // generation_config.json's eos_token_id may be a list; its first entry separates documents.
    write(&dir, "generation_config.json", r#"{"eos_token_id": [7, 9]}"#);
    let stream = expected_stream(&DOCUMENTS[..2], Some(7));
    let set = load(&dir, &CalibrationSource::Jsonl { path: file }, &options(99, seq_len, 8)).unwrap();
    assert_eq!(all_ids(&set), stream[..stream.len() / seq_len * seq_len]);
}

#[test]
fn tokenizer_padding_and_truncation_settings_are_ignored() {
    let tmp = temp_dir();
    let dir = model_dir(tmp.path());
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap()).unwrap();
    tokenizer["padding"] = serde_json::json!({
        "strategy": { "Fixed": 64 }, "direction": "Right", "pad_to_multiple_of": null,
        "pad_id": 0, "pad_type_id": 0, "pad_token": "<|endoftext|>"
    });
    tokenizer["truncation"] =
        serde_json::json!({ "direction": "Right", "max_length": 3, "strategy": "LongestFirst", "stride": 0 });
    write(&dir, "tokenizer.json", serde_json::to_string(&tokenizer).unwrap());
    let file = write(tmp.path(), "calib.jsonl", jsonl(&DOCUMENTS));
    let stream = expected_stream(&DOCUMENTS, Some(EOS));
    let seq_len = 6;

    let set = load(&dir, &CalibrationSource::Jsonl { path: file }, &options(99, seq_len, 2)).unwrap();
    assert_eq!(all_ids(&set), stream[..stream.len() / seq_len * seq_len]);
}

#[test]
fn reading_stops_once_enough_tokens_are_collected() {
    let tmp = temp_dir();
    let dir = model_dir(tmp.path());
    // Far more documents than one tokenizer chunk, then a malformed line that is never reached.
    let texts = vec!["The quick brown fox."; 300];
    let file = write(tmp.path(), "calib.jsonl", format!("{}not json\n", jsonl(&texts)));
    let set = load(&dir, &CalibrationSource::Jsonl { path: file }, &options(2, 16, 2)).unwrap();
    assert_eq!(set.sample_count(), 2);
    assert_eq!(all_ids(&set), expected_stream(&texts, Some(EOS))[..32]);
}

#[test]
fn id_rows_give_one_window_each_when_shorter_than_two_and_need_no_tokenizer() {
    let tmp = temp_dir();
    let no_model = tmp.path().join("absent");
    let sequences = vec![vec![1, 2, 3, 4, 5], vec![6, 7, 8], vec![9, 10, 11, 12], vec![255, 254, 253]];
    let source = CalibrationSource::Ids { ids: sequences };

    let set = load(&no_model, &source, &options(3, 3, 2)).unwrap();
    assert_well_formed(&set, 3);
    assert_eq!(batch_rows(&set), [2, 1]);
    assert_eq!(all_ids(&set), [1, 2, 3, 6, 7, 8, 9, 10, 11]);
    assert_eq!(set.token_count(), 9);

    let set = load(&no_model, &source, &options(10, 3, 10)).unwrap();
    assert_eq!(set.sample_count(), 4);
    assert_eq!(set.requested_samples, 10);
}

// ---- errors ----

#[test]
fn text_without_tokenizer_is_tokenizer_missing() {
    let tmp = temp_dir();
    let dir = tmp.path().join("bare-model");
    std::fs::create_dir_all(&dir).unwrap();
    let file = write(tmp.path(), "calib.jsonl", jsonl(&DOCUMENTS));
    let error = expect_err(load(&dir, &CalibrationSource::Jsonl { path: file }, &options(1, 4, 1)));
    assert_error(&error, "E_TOKENIZER_MISSING", &["bare-model", "tokenizer.json"]);
}

#[test]
fn unparsable_tokenizer_files_are_tokenizer_invalid() {
    let tmp = temp_dir();
    let dir = model_dir(tmp.path());
    let file = write(tmp.path(), "calib.txt", "Hello, world!");
    write(&dir, "tokenizer.json", r#"{"model": {"type": "BPE", "vocab": 3}}"#);
    let error = expect_err(load(&dir, &CalibrationSource::Text { path: file.clone() }, &options(1, 4, 1)));
    assert_error(&error, "E_TOKENIZER_INVALID", &["tokenizer.json"]);

    let dir = model_dir(&tmp.path().join("second"));
    write(&dir, "tokenizer_config.json", "{ not json");
    let error = expect_err(load(&dir, &CalibrationSource::Text { path: file }, &options(1, 4, 1)));
    assert_error(&error, "E_TOKENIZER_INVALID", &["tokenizer_config.json"]);
}

#[test]
fn empty_or_short_files_are_calibration_empty() {
    let tmp = temp_dir();
    let dir = model_dir(tmp.path());
    for (name, contents) in [("empty.jsonl", ""), ("blank.jsonl", "\n  \n\n")] {
        let file = write(tmp.path(), name, contents);
        let error = expect_err(load(&dir, &CalibrationSource::Jsonl { path: file }, &options(4, 16, 2)));
        assert_error(&error, "E_CALIBRATION_EMPTY", &[name, "yielded 0 tokens", "16 needed"]);
    }
    let file = write(tmp.path(), "empty.txt", "\n\n");
    let error = expect_err(load(&dir, &CalibrationSource::Text { path: file }, &options(4, 16, 2)));
    assert_error(&error, "E_CALIBRATION_EMPTY", &["empty.txt", "yielded 0 tokens"]);

    // "Hello, world!" is 9 tokens: one short of a 10-token sequence.
    let file = write(tmp.path(), "short.txt", "Hello, world!");
    let error = expect_err(load(&dir, &CalibrationSource::Text { path: file }, &options(4, 10, 2)));
    assert_error(&error, "E_CALIBRATION_EMPTY", &["short.txt", "yielded 9 tokens", "10 needed"]);
}

#[test]
fn long_id_rows_are_cut_into_windows_until_samples() {
    let tmp = temp_dir();
    let source = CalibrationSource::Ids { ids: vec![(0..10).collect(), vec![20, 21, 22, 23, 24], (30..42).collect()] };
    let load = |samples| load(tmp.path(), &source, &options(samples, 4, 8));
    // Rows of 10, 5 and 12 ids give 2, 1 and 3 windows of 4; tails are dropped.
    let all = load(100).unwrap();
    assert_eq!(all.sample_count(), 6);
    assert_eq!(all_ids(&all), [0, 1, 2, 3, 4, 5, 6, 7, 20, 21, 22, 23, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41]);
    assert_eq!(all.requested_samples, 100);
    // The first `samples` windows, row after row.
    assert_eq!(all_ids(&load(3).unwrap()), [0, 1, 2, 3, 4, 5, 6, 7, 20, 21, 22, 23]);
}

#[test]
fn short_or_missing_ids_are_calibration_empty() {
    let tmp = temp_dir();
    let source = CalibrationSource::Ids { ids: vec![vec![1, 2, 3, 4], vec![1, 2]] };
    let error = expect_err(load(tmp.path(), &source, &options(2, 4, 1)));
    assert_error(&error, "E_CALIBRATION_EMPTY", &["row 1", "yielded 2 tokens", "4 needed"]);
    // The short sequence lies beyond `samples`, so it is not used.
    assert!(load(tmp.path(), &source, &options(1, 4, 1)).is_ok());

    let error = expect_err(load(tmp.path(), &CalibrationSource::Ids { ids: vec![] }, &options(2, 4, 1)));
    assert_error(&error, "E_CALIBRATION_EMPTY", &["pre-tokenized ids", "yielded 0 tokens"]);
}

#[test]
fn malformed_jsonl_lines_are_calibration_invalid_with_line_numbers() {
    let tmp = temp_dir();
    let dir = model_dir(tmp.path());
    let cases: [(&str, &[u8], &str); 5] = [
        ("syntax.jsonl", b"{\"text\": \"a\"}\n\n{\"text\": \"b\"\n", "line 3"),
        ("no_text.jsonl", b"{\"text\": \"a\"}\n{\"body\": \"a\"}\n", "line 2"),
        ("number.jsonl", b"\n{\"text\": 42}\n", "line 2"),
        ("array.jsonl", b"[\"text\"]\n", "line 1"),
        ("latin1.jsonl", b"{\"text\": \"caf\xe9\"}\n", "line 1"),
    ];
    for (name, contents, line) in cases {
        let file = write(tmp.path(), name, contents);
        let error = expect_err(load(&dir, &CalibrationSource::Jsonl { path: file }, &options(9, 64, 1)));
        assert_error(&error, "E_CALIBRATION_INVALID", &[name, line]);
    }
    let file = write(tmp.path(), "latin1.txt", b"Hello\n\ncaf\xe9\n");
    let error = expect_err(load(&dir, &CalibrationSource::Text { path: file }, &options(9, 64, 1)));
    assert_error(&error, "E_CALIBRATION_INVALID", &["latin1.txt", "line 3", "UTF-8"]);
}

#[test]
fn ids_outside_the_vocabulary_are_id_range_errors() {
    let tmp = temp_dir();
    let source = CalibrationSource::Ids { ids: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 300, 9]] };
    let error = expect_err(load(tmp.path(), &source, &options(2, 4, 1)));
    assert_error(&error, "E_CALIBRATION_ID_RANGE", &["sample 1", "position 3", "token id 300", "vocab_size 256"]);

    // A tokenizer producing ids beyond the model's vocabulary is caught the same way, naming the file.
    let dir = model_dir(tmp.path());
    let file = write(tmp.path(), "calib.txt", "Hello, world!");
    let error = expect_err(load_calibration(
        &dir,
        &CalibrationSource::Text { path: file },
        &options(1, 9, 1),
        100,
        &AtomicBool::new(false),
    ));
    assert_error(
        &error,
        "E_CALIBRATION_ID_RANGE",
        &["calib.txt", "sample 0", "position 1", "token id 180", "vocab_size 100"],
    );
}

#[test]
fn zero_or_overflowing_options_are_rejected() {
    let tmp = temp_dir();
    let source = CalibrationSource::Ids { ids: vec![vec![1, 2, 3, 4]] };
    for (opts, vocab, needle) in [
        (options(0, 4, 1), VOCAB, "samples"),
        (options(1, 0, 1), VOCAB, "seq_len"),
        (options(1, 4, 0), VOCAB, "batch_size"),
        (options(1, 4, 1), 0, "vocab_size"),
        (options(usize::MAX, 4, 1), VOCAB, "overflows"),
    ] {
        let error = expect_err(load_calibration(tmp.path(), &source, &opts, vocab, &AtomicBool::new(false)));
        assert_error(&error, "E_CALIBRATION_OPTIONS", &[needle]);
    }
}

#[test]
fn a_missing_calibration_file_is_an_io_error_naming_it() {
    let tmp = temp_dir();
    let dir = model_dir(tmp.path());
    let source = CalibrationSource::Jsonl { path: tmp.path().join("nowhere.jsonl") };
    let error = expect_err(load(&dir, &source, &options(1, 4, 1)));
    assert_error(&error, "E_IO", &["nowhere.jsonl"]);
}

#[test]
fn calibration_text_that_is_not_a_regular_file_is_refused_without_blocking_and_reading_is_cancellable() {
    let tmp = temp_dir();
    let dir = model_dir(tmp.path());
    let fifo = tmp.path().join("calib.jsonl");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // Opening a FIFO without a writer would block forever.
    let error = expect_err(load(&dir, &CalibrationSource::Jsonl { path: fifo }, &options(1, 4, 1)));
    assert_error(&error, "E_IO", &["calib.jsonl", "a FIFO (named pipe)", "not a regular file"]);
    let error = expect_err(load(&dir, &CalibrationSource::Text { path: tmp.path().into() }, &options(1, 4, 1)));
    assert_error(&error, "E_IO", &["a directory", "not a regular file"]);

    // A cancelled run stops reading.
    let file = write(tmp.path(), "many.jsonl", jsonl(&DOCUMENTS));
    let error = expect_err(load_calibration(
        &dir,
        &CalibrationSource::Jsonl { path: file },
        &options(1, 4, 1),
        VOCAB,
        &AtomicBool::new(true),
    ));
    assert_error(&error, "E_CANCELLED", &[]);
}

#[test]
fn a_tokenizer_json_that_is_a_fifo_is_named_as_such_not_missing() {
    let tmp = temp_dir();
    let dir = model_dir(tmp.path());
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(dir.join("tokenizer.json")).status().unwrap().success());
    let file = write(tmp.path(), "c.jsonl", jsonl(&DOCUMENTS));
    let error = expect_err(load(&dir, &CalibrationSource::Jsonl { path: file }, &options(1, 4, 1)));
    assert_error(&error, "E_IO", &["tokenizer.json", "a FIFO (named pipe)"]);
}

// ---- documents: JSON files, documents in memory, conversations through the chat template -----------------

/// A Qwen-style chat template (as tokenizer_config.json carries it) that strips message contents.
const CHAT_TEMPLATE: &str = "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + \
    message['content'].strip() + '<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}\
    {{- '<|im_start|>assistant\\n' }}{%- endif %}";

/// The test model directory with `CHAT_TEMPLATE` in its tokenizer_config.json.
fn chat_model_dir(root: &Path) -> PathBuf {
    let dir = model_dir(root);
    let path = dir.join("tokenizer_config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["chat_template"] = CHAT_TEMPLATE.into();
    std::fs::write(path, config.to_string()).unwrap();
    dir
}

fn conversation() -> serde_json::Value {
    serde_json::json!([{ "role": "user", "content": "  Hi there " }, { "role": "assistant", "content": "Hello!" }])
}

/// By hand: what CHAT_TEMPLATE makes of `conversation()`.
const RENDERED: &str = "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n";

fn documents(values: serde_json::Value) -> CalibrationSource {
    CalibrationSource::Documents { documents: serde_json::from_value(values).unwrap() }
}

#[test]
fn conversations_are_rendered_with_the_chat_template_then_tokenized_like_text() {
    let tmp = temp_dir();
    let dir = chat_model_dir(tmp.path());
    let chat = moe_quant_core::calib::chat::ChatTemplate::load(&dir).unwrap();
    let rendered = chat.render(&conversation(), &|m| moe_quant_core::Error::internal(m)).unwrap();
    assert_eq!(rendered, RENDERED);

    let load = |source: &CalibrationSource| all_ids(&load(&dir, source, &options(100, 4, 8)).unwrap());
    let by_hand = load(&documents(serde_json::json!(["a first document", RENDERED, "the end"])));
    let conversations = documents(serde_json::json!(["a first document", conversation(), "the end"]));
    assert_eq!(load(&conversations), by_hand);

    // The same documents in a JSON file (every item form) and in JSONL lines.
    let json = serde_json::json!([{ "text": "a first document" }, { "messages": conversation() }, "the end"]);
    let file = write(tmp.path(), "calib.json", json.to_string());
    assert_eq!(load(&CalibrationSource::Json { path: file }), by_hand);
    let bare =
        write(tmp.path(), "bare.json", serde_json::json!(["a first document", conversation(), "the end"]).to_string());
    assert_eq!(load(&CalibrationSource::Json { path: bare }), by_hand);
    let lines = [
        serde_json::json!({ "text": "a first document" }),
        serde_json::json!({ "messages": conversation() }),
        serde_json::json!({ "text": "the end" }),
    ];
    let jsonl = write(tmp.path(), "calib.jsonl", lines.iter().map(|l| format!("{l}\n")).collect::<String>());
    assert_eq!(load(&CalibrationSource::Jsonl { path: jsonl }), by_hand);
}

#[test]
fn bad_documents_and_templates_are_named() {
    let tmp = temp_dir();
    let dir = chat_model_dir(tmp.path());
    let load = |dir: &Path, source: CalibrationSource| expect_err(load(dir, &source, &options(1, 4, 1)));
    let not_array = write(tmp.path(), "object.json", r#"{"text": "x"}"#);
    assert_error(
        &load(&dir, CalibrationSource::Json { path: not_array }),
        "E_CALIBRATION_INVALID",
        &["object.json", "the file", "JSON array"],
    );
    let bad_item = write(tmp.path(), "items.json", r#"["fine", {"text": 3}]"#);
    assert_error(
        &load(&dir, CalibrationSource::Json { path: bad_item }),
        "E_CALIBRATION_INVALID",
        &["items.json", "item 1", "\"text\" is not a string"],
    );
    let broken = write(tmp.path(), "broken.json", "[");
    assert_error(
        &load(&dir, CalibrationSource::Json { path: broken }),
        "E_CALIBRATION_INVALID",
        &["broken.json", "not valid JSON"],
    );
    let bad_line = write(tmp.path(), "lines.jsonl", "{\"text\": \"ok\"}\n{\"messages\": 7}\n");
    assert_error(
        &load(&dir, CalibrationSource::Jsonl { path: bad_line }),
        "E_CALIBRATION_INVALID",
        &["lines.jsonl", "line 2", "\"messages\""],
    );

    // A template that raises, and a model without one.
    let path = dir.join("chat_template.jinja");
    std::fs::write(&path, "{{ raise_exception('Conversation roles must alternate') }}").unwrap();
    let error = load(&dir, documents(serde_json::json!([conversation()])));
    assert_error(
        &error,
        "E_CALIBRATION_INVALID",
        &["calibration documents", "document 0", "chat_template.jinja", "roles must alternate"],
    );
    let plain = model_dir(&tmp.path().join("plain"));
    let error = load(&plain, documents(serde_json::json!(["text is fine", conversation()])));
    assert_error(&error, "E_TOKENIZER_INVALID", &["no chat template"]);
}

#[test]
fn chat_templates_render_as_transformers_apply_chat_template_does() {
    // fixtures/vectors/chat.json: transformers 5.25's apply_chat_template on a template written to use what real
    // chat templates use (tools/make_chat_vectors.py).
    let text = std::fs::read_to_string(fixture_hub().join("../../vectors/chat.json")).unwrap();
    let vectors: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tmp = temp_dir();
    let dir = model_dir(tmp.path());
    std::fs::write(dir.join("chat_template.jinja"), vectors["template"].as_str().unwrap()).unwrap();
    let chat = moe_quant_core::calib::chat::ChatTemplate::load(&dir).unwrap();
    let cases = vectors["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let rendered = chat.render(&case["messages"], &|m| moe_quant_core::Error::internal(m));
        match (case["text"].as_str(), case["error"].as_str()) {
            (Some(expected), _) => assert_eq!(rendered.unwrap(), expected, "{}", case["name"]),
            (None, Some(error)) => {
                let message = rendered.unwrap_err().to_string();
                assert!(message.contains(error), "{}: {message}", case["name"]);
            }
            _ => panic!("a case with neither text nor error"),
        }
    }
}
