//! Calibration data: turns documents (from a JSONL, JSON or plain-text file, or given in memory; see
//! [`super::documents`]) or pre-tokenized ids into fixed-length token sequences `[rows, seq_len]`, grouped in
//! batches, for the calibration forward.
//!
//! Windowing rule for documents, like fixed-length chunking in hf_ptq / `group_texts`:
//! every document is tokenized on its own *without* the tokenizer's special tokens, the documents' token
//! streams are concatenated with one end-of-sequence token between consecutive documents (when the model
//! directory names one, see [`document_separator`]), and the stream is cut into consecutive windows of
//! `seq_len` tokens. The first `samples` windows are kept and the incomplete tail is dropped. Documents
//! that tokenize to nothing add no separator. Reading stops once `samples × seq_len` tokens are collected,
//! so a large file is only read as far as needed (and a malformed line after that point goes unnoticed).
//!
//! Special tokens are left out because a post-processor such as Llama's template puts a BOS in front of
//! every document, which in a concatenated stream would land mid-window; the single separator between
//! documents marks the boundary instead. For ByteLevel post-processors (Qwen) the ids are the same either
//! way. The tokenizer's own padding and truncation settings are switched off: they would pad or cut the
//! documents.
//!
//! One document may hold at most 16 MiB (`MAX_DOCUMENT_BYTES`); a longer one is an error found before it is
//! read whole, since the tokenizer's working memory grows with the document and a model needs only
//! `samples × seq_len` tokens.
//!
//! Pre-tokenized ids are taken as they are, row by row: each row is cut into consecutive windows of `seq_len`
//! ids (its tail dropped) and the first `samples` windows are kept. Every row needed must hold at least
//! `seq_len` ids (rows after the first `samples` windows are ignored).
//!
//! Fewer windows than `samples` is not an error: the set holds what there is and
//! [`CalibrationSet::sample_count`] says how many, next to [`CalibrationSet::requested_samples`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use tokenizers::Tokenizer;

use super::documents::{Document, DocumentReader};
use crate::error::{Error, Result};
use crate::limits::{read_small_text, MAX_CONFIG_BYTES, MAX_TOKENIZER_BYTES};

/// Which sequences a run uses, as calibration and comparison requests name them (options already validated
/// and defaulted by TS).
#[derive(Debug, Clone, serde::Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct SequenceRequest {
    /// Texts or ids; text is tokenized with the model's tokenizer (the *original* model's, when comparing).
    pub source: CalibrationSource,
    pub samples: usize,
    pub seq_len: usize,
    /// Rows per forward.
    pub batch_size: usize,
    /// `cpu` (default), `cuda` or `cuda:N`.
    #[serde(default)]
    pub device: Option<String>,
    /// Several devices that split the calibration batches between them (data parallel), instead of `device`:
    /// distinct GPUs (`cuda:0`, `cuda:1`, …), or `cpu` entries (the same split on the CPU).
    #[serde(default)]
    pub devices: Option<Vec<String>>,
}

impl SequenceRequest {
    /// Loads the sequences (tokenizing text with the tokenizer of the model in `dir`).
    pub fn load(&self, dir: &Path, vocab_size: usize, cancel: &AtomicBool) -> Result<CalibrationSet> {
        let options = CalibrationOptions { samples: self.samples, seq_len: self.seq_len, batch_size: self.batch_size };
        load_calibration(dir, &self.source, &options, vocab_size, cancel)
    }

    /// The device the forward runs on (the first, with several).
    pub fn compute_device(&self) -> Result<crate::device::ComputeDevice> {
        let mut devices = self.compute_devices()?;
        Ok(devices.swap_remove(0))
    }

    /// Whether the forward runs on GPUs, as `device` or `devices` name them (without opening them).
    pub fn names_gpu(&self) -> bool {
        let mut named = self.devices.iter().flatten().chain(&self.device);
        named.any(|spec| crate::device::names_gpu(spec))
    }

    /// The devices the forward runs on: `devices`, or the one `device`.
    pub fn compute_devices(&self) -> Result<Vec<crate::device::ComputeDevice>> {
        match (&self.device, &self.devices) {
            (Some(_), Some(_)) => Err(Error::CalibrationOptions { message: "give device or devices, not both".into() }),
            (_, Some(devices)) => crate::device::ComputeDevice::parse_all(devices),
            (device, None) => Ok(vec![crate::device::ComputeDevice::parse(device.as_deref().unwrap_or("cpu"))?]),
        }
    }
}

/// Where calibration text (or ids) come from (the document formats are described in [`super::documents`]), as
/// requests name it (`{ "kind": "jsonl", "path": … }`, …).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, ts_rs::TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CalibrationSource {
    /// One JSON object per line: `{"text": …}` or `{"messages": […]}`.
    Jsonl { path: PathBuf },
    /// A JSON array of documents, read whole.
    Json { path: PathBuf },
    /// Plain UTF-8 text, split into documents on blank lines.
    Text { path: PathBuf },
    /// Documents given in memory: texts and conversations.
    Documents { documents: Vec<Document> },
    /// Already tokenized rows, cut into windows.
    Ids { ids: Vec<Vec<u32>> },
}

/// How many sequences of which length, in batches of how many rows. All must be at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibrationOptions {
    /// The number of sequences wanted (fewer are used when the source runs out).
    pub samples: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Rows per batch (the last batch may hold fewer).
    pub batch_size: usize,
}

/// One batch of calibration sequences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Token ids, row-major `[rows, seq_len]`.
    pub ids: Vec<u32>,
    pub rows: usize,
    pub seq_len: usize,
}

impl Batch {
    /// The ids of row `row`, `[seq_len]`.
    pub fn row(&self, row: usize) -> Option<&[u32]> {
        self.ids.chunks_exact(self.seq_len).nth(row)
    }
}

/// The calibration sequences, in batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalibrationSet {
    pub batches: Vec<Batch>,
    /// The `samples` asked for; [`CalibrationSet::sample_count`] may be lower when the source ran out.
    pub requested_samples: usize,
}

impl CalibrationSet {
    /// The number of sequences over all batches.
    pub fn sample_count(&self) -> usize {
        self.batches.iter().map(|batch| batch.rows).sum()
    }

    /// The number of tokens over all batches (`sample_count × seq_len`).
    pub fn token_count(&self) -> usize {
        self.batches.iter().map(|batch| batch.ids.len()).sum()
    }
}

/// Documents tokenized per call to the tokenizer: large enough to use its threads, small enough that reading
/// stops soon after enough tokens are collected.
const DOCUMENTS_PER_CHUNK: usize = 128;

const IDS_INPUT: &str = "pre-tokenized ids";

/// Loads calibration sequences from `source`, tokenizing text with `model_dir/tokenizer.json`, and checks
/// every id against `vocab_size`. See the module documentation for the windowing rule.
///
/// Errors: `E_CALIBRATION_OPTIONS` (a zero option or vocab size, `samples × seq_len` overflowing),
/// `E_TOKENIZER_MISSING`, `E_TOKENIZER_INVALID`, `E_IO`, `E_CALIBRATION_INVALID` (a bad JSONL line,
/// non-UTF-8 text or a document over [`MAX_DOCUMENT_BYTES`]), `E_CALIBRATION_EMPTY` (not one full sequence), `E_CALIBRATION_ID_RANGE`.
pub fn load_calibration(
    model_dir: &Path,
    source: &CalibrationSource,
    options: &CalibrationOptions,
    vocab_size: usize,
    cancel: &AtomicBool,
) -> Result<CalibrationSet> {
    let token_budget = check_options(options, vocab_size)?;
    let documents = match source {
        CalibrationSource::Ids { ids: sequences } => {
            let windows = id_windows(sequences, options)?;
            check_ids(&windows, options.seq_len, vocab_size, IDS_INPUT)?;
            return Ok(CalibrationSet { batches: into_batches(windows, options), requested_samples: options.samples });
        }
        CalibrationSource::Jsonl { path } => DocumentReader::jsonl(model_dir, path)?,
        CalibrationSource::Json { path } => DocumentReader::json(model_dir, path)?,
        CalibrationSource::Text { path } => DocumentReader::text(model_dir, path)?,
        CalibrationSource::Documents { documents } => DocumentReader::memory(model_dir, documents),
    };
    let input = documents.input().to_string();
    let windows = text_windows(model_dir, documents, options, token_budget, cancel)?;
    check_ids(&windows, options.seq_len, vocab_size, &input)?;
    Ok(CalibrationSet { batches: into_batches(windows, options), requested_samples: options.samples })
}

/// Rejects zero sizes and returns `samples × seq_len`, the most tokens the set can hold.
fn check_options(options: &CalibrationOptions, vocab_size: usize) -> Result<usize> {
    let named = [
        ("samples", options.samples),
        ("seq_len", options.seq_len),
        ("batch_size", options.batch_size),
        ("vocab_size", vocab_size),
    ];
    if let Some((name, _)) = named.iter().find(|(_, value)| *value == 0) {
        return Err(Error::CalibrationOptions { message: format!("{name} must be at least 1 (got 0)") });
    }
    options.samples.checked_mul(options.seq_len).ok_or_else(|| Error::CalibrationOptions {
        message: format!("samples × seq_len ({} × {}) overflows", options.samples, options.seq_len),
    })
}

/// The first `samples` windows of `seq_len` ids, row after row, flattened `[windows, seq_len]`.
fn id_windows(sequences: &[Vec<u32>], options: &CalibrationOptions) -> Result<Vec<u32>> {
    if sequences.is_empty() {
        return Err(Error::CalibrationEmpty { input: IDS_INPUT.to_string(), tokens: 0, needed: options.seq_len });
    }
    // Rows are checked before allocating, so the buffer is bounded by the ids actually given.
    let mut rows = Vec::new();
    let mut count = 0;
    for (index, sequence) in sequences.iter().enumerate() {
        if count >= options.samples {
            break;
        }
        if sequence.len() < options.seq_len {
            return Err(Error::CalibrationEmpty {
                input: format!("{IDS_INPUT}, row {index}"),
                tokens: sequence.len(),
                needed: options.seq_len,
            });
        }
        let taken = (sequence.len() / options.seq_len).min(options.samples - count);
        rows.push(&sequence[..taken * options.seq_len]);
        count += taken;
    }
    Ok(rows.concat())
}

/// Tokenizes the documents into one stream and cuts it into windows (module docs).
fn text_windows(
    model_dir: &Path,
    mut documents: DocumentReader<'_>,
    options: &CalibrationOptions,
    token_budget: usize,
    cancel: &AtomicBool,
) -> Result<Vec<u32>> {
    let tokenizer_path = model_dir.join("tokenizer.json");
    // Missing only when nothing is there: a FIFO or a directory is refused as such when it is read.
    if !tokenizer_path.exists() {
        return Err(Error::TokenizerMissing { dir: model_dir.to_path_buf() });
    }
    let invalid = |message: String| Error::TokenizerInvalid { path: tokenizer_path.clone(), message };
    let text = read_small_text(&tokenizer_path, MAX_TOKENIZER_BYTES, invalid)?;
    let mut tokenizer: Tokenizer = text.parse().map_err(|error| invalid(format!("not a valid tokenizer: {error}")))?;
    drop(text);
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).map_err(|error| invalid(error.to_string()))?;
    let separator = document_separator(model_dir, &tokenizer)?;

    let mut stream: Vec<u32> = Vec::new();
    'read: loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let mut chunk = Vec::with_capacity(DOCUMENTS_PER_CHUNK);
        while chunk.len() < DOCUMENTS_PER_CHUNK {
            match documents.next_text()? {
                Some(document) => chunk.push(document),
                None => break,
            }
        }
        if chunk.is_empty() {
            break;
        }
        let last_chunk = chunk.len() < DOCUMENTS_PER_CHUNK;
        let encodings = tokenizer.encode_batch_fast(chunk, false).map_err(|error| Error::TokenizerInvalid {
            path: tokenizer_path.clone(),
            message: format!("could not encode calibration text from {}: {error}", documents.input()),
        })?;
        for encoding in encodings {
            let ids = encoding.get_ids();
            if ids.is_empty() {
                continue;
            }
            if let (Some(separator), false) = (separator, stream.is_empty()) {
                stream.push(separator);
            }
            stream.extend_from_slice(ids);
            if stream.len() >= token_budget {
                break 'read;
            }
        }
        if last_chunk {
            break;
        }
    }

    if stream.len() < options.seq_len {
        return Err(Error::CalibrationEmpty {
            input: documents.input().to_string(),
            tokens: stream.len(),
            needed: options.seq_len,
        });
    }
    let windows = (stream.len() / options.seq_len).min(options.samples);
    stream.truncate(windows * options.seq_len);
    stream.shrink_to_fit();
    Ok(stream)
}

/// The token put between documents: the end-of-sequence token, as `transformers` would find it —
/// `eos_token` of `tokenizer_config.json` (a string or `{"content": …}`) looked up in the tokenizer, else
/// the first `eos_token_id` of `generation_config.json`, else of `config.json`. `None` when none names one.
fn document_separator(model_dir: &Path, tokenizer: &Tokenizer) -> Result<Option<u32>> {
    let tokenizer_config = model_dir.join("tokenizer_config.json");
    if let Some(config) = read_optional_json(&tokenizer_config, true)? {
        if let Some(id) = config.get("eos_token").and_then(token_text).and_then(|token| tokenizer.token_to_id(token)) {
            return Ok(Some(id));
        }
    }
    for name in ["generation_config.json", "config.json"] {
        if let Some(config) = read_optional_json(&model_dir.join(name), false)? {
            let eos = config.get("eos_token_id");
            let first = eos.and_then(|eos| eos.as_array().and_then(|ids| ids.first()).or(Some(eos)));
            if let Some(id) = first.and_then(|id| id.as_u64()).and_then(|id| u32::try_from(id).ok()) {
                return Ok(Some(id));
            }
        }
    }
    Ok(None)
}

/// A special token as tokenizer_config.json writes it: a string, or `{"content": …}`.
pub(super) fn token_text(value: &serde_json::Value) -> Option<&str> {
    value.as_str().or_else(|| value.get("content")?.as_str())
}

/// Parses `path` as JSON when it exists; a file that does not parse (or is not a regular file) is an error
/// naming it.
pub(super) fn read_optional_json(path: &Path, tokenizer_file: bool) -> Result<Option<serde_json::Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let invalid = |message: String| {
        let path = path.to_path_buf();
        if tokenizer_file {
            Error::TokenizerInvalid { path, message }
        } else {
            Error::ConfigInvalid { path, message }
        }
    };
    let text = read_small_text(path, MAX_CONFIG_BYTES, invalid)?;
    serde_json::from_str(&text).map(Some).map_err(|error| invalid(format!("invalid JSON: {error}")))
}

/// Checks every id against the vocabulary; `sample` and `position` index `[windows, seq_len]`.
fn check_ids(windows: &[u32], seq_len: usize, vocab_size: usize, input: &str) -> Result<()> {
    match windows.iter().position(|&id| id as usize >= vocab_size) {
        None => Ok(()),
        Some(flat) => Err(Error::CalibrationIdRange {
            input: input.to_string(),
            sample: flat / seq_len,
            position: flat % seq_len,
            id: windows[flat],
            vocab_size,
        }),
    }
}

/// Splits `[windows, seq_len]` into batches of `batch_size` rows (the last may be smaller).
fn into_batches(windows: Vec<u32>, options: &CalibrationOptions) -> Vec<Batch> {
    let total_rows = windows.len() / options.seq_len;
    // Capped by the rows there are, so the product cannot overflow (windows.len() fits in memory).
    let rows_per_batch = options.batch_size.min(total_rows.max(1));
    windows
        .chunks(rows_per_batch * options.seq_len)
        .map(|chunk| Batch { ids: chunk.to_vec(), rows: chunk.len() / options.seq_len, seq_len: options.seq_len })
        .collect()
}
