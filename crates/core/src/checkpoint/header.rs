//! The one function through which untrusted safetensors bytes are parsed: [`parse_safetensors`] checks the
//! header length, the JSON, every tensor's dtype, shape and offsets, that the tensors tile the data region
//! with no overlap or gap, and that the file holds exactly that data — all before anything a header claims
//! is allocated or read. Errors name the file and the tensor. This is what `fuzz/` targets.
//!
//! The safetensors crate's own parser is not used for reading: its errors do not say which tensor is wrong,
//! and 0.8 overflows (a panic with overflow checks on) when the offsets sum past `usize::MAX`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::prequant::StoredForm;
use super::{Dtype, TensorInfo};
use crate::error::{Error, Result};
use crate::limits::{MAX_HEADER_BYTES, MAX_RANK};

/// Length of the little-endian `u64` that precedes the header.
const LENGTH_BYTES: usize = 8;

/// A validated safetensors file: its tensors sorted by offset (with `file` left 0) and its `__metadata__`.
#[derive(Debug, Clone)]
pub struct ParsedHeader {
    /// Bytes of the JSON header (the data starts at `8 + header_len`).
    pub header_len: usize,
    /// Every tensor, in offset order, with absolute byte ranges inside `bytes`.
    pub tensors: Vec<TensorInfo>,
    pub metadata: BTreeMap<String, String>,
}

/// The error for a file shorter than the header length field.
pub fn too_short(path: &Path, size: u64) -> Error {
    Error::Truncated {
        path: path.to_path_buf(),
        message: format!("{size} bytes is too short for a safetensors file (the header length alone is 8 bytes)"),
    }
}

/// Parses and validates the whole safetensors file `bytes` read from `path` (named in errors).
///
/// Errors: `E_CHECKPOINT_TRUNCATED` (the file ends before its header or its data), `E_CHECKPOINT_HEADER_INVALID`
/// (header too long, not UTF-8 or not safetensors JSON, a shape overflowing or disagreeing with its
/// offsets, offsets overlapping, leaving gaps or stopping before the end of the file, a name listed twice),
/// `E_CHECKPOINT_DTYPE_UNSUPPORTED`.
pub fn parse_safetensors(path: &Path, bytes: &[u8]) -> Result<ParsedHeader> {
    parse_safetensors_prefix(path, bytes, bytes.len() as u64)
}

/// How many leading bytes of a file [`parse_safetensors_prefix`] needs, given its first 8 bytes: the length
/// field and the header it declares (capped at the header limit, which the parser then reports).
pub fn header_prefix_len(first: [u8; LENGTH_BYTES]) -> usize {
    let declared = u64::from_le_bytes(first).min(MAX_HEADER_BYTES);
    // At most 100 MB, so it fits usize.
    LENGTH_BYTES + declared as usize
}

/// [`parse_safetensors`] from the first bytes of a file of `file_size` bytes: `prefix` holds the length
/// field and the header (as much of them as the file has), which is all the parser reads; the data region is
/// checked against `file_size`.
pub fn parse_safetensors_prefix(path: &Path, prefix: &[u8], file_size: u64) -> Result<ParsedHeader> {
    let invalid = |message: String| Error::HeaderInvalid { path: path.to_path_buf(), message };
    let header = header_bytes(path, prefix, file_size)?;
    let header_len = header.len();
    let text = std::str::from_utf8(header).map_err(|e| invalid(format!("header is not UTF-8: {e}")))?;
    let raw = parse_json(text).map_err(invalid)?;
    let mut tensors = checked_tensors(path, raw.tensors)?;

    // The tensors must tile the data region: sorted by offset, each starts where the previous one ended.
    tensors.sort_by_key(|t| (t.start, t.end));
    let data_len = tiled_length(&tensors).map_err(invalid)? as u64;
    // Bytes after the length field in the whole file (the prefix may stop after the header).
    let available = file_size.saturating_sub(LENGTH_BYTES as u64) - header_len as u64;
    if data_len > available {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            message: format!(
                "the header's offsets need {data_len} bytes of tensor data but the file holds only {available}"
            ),
        });
    }
    if data_len < available {
        return Err(invalid(format!(
            "the file holds {} bytes past the last tensor (the header's offsets end at {data_len})",
            available - data_len
        )));
    }

    // Offsets become absolute; `data_start + end` is at most the file size, so nothing overflows.
    let data_start = LENGTH_BYTES + header_len;
    for tensor in &mut tensors {
        tensor.start += data_start;
        tensor.end += data_start;
    }
    Ok(ParsedHeader { header_len, tensors, metadata: raw.metadata })
}

/// The header's JSON bytes: the length field read and checked against the limit and the file's size.
fn header_bytes<'p>(path: &Path, prefix: &'p [u8], file_size: u64) -> Result<&'p [u8]> {
    let Some((length, rest)) = prefix.split_first_chunk::<LENGTH_BYTES>() else {
        return Err(too_short(path, file_size));
    };
    // Bytes after the length field in the whole file (the prefix may stop after the header).
    let after_length = file_size.saturating_sub(LENGTH_BYTES as u64);
    let declared = u64::from_le_bytes(*length);
    if declared > MAX_HEADER_BYTES {
        return Err(Error::HeaderInvalid {
            path: path.to_path_buf(),
            message: format!("header length {declared} exceeds the 100 MB limit"),
        });
    }
    // At most 100 MB, so it fits usize.
    let header_len = declared as usize;
    match rest.get(..header_len) {
        Some(header) if header_len as u64 <= after_length => Ok(header),
        _ => Err(Error::Truncated {
            path: path.to_path_buf(),
            message: format!(
                "the header declares {header_len} bytes but the file holds only {after_length} after the length"
            ),
        }),
    }
}

/// Every tensor of the header, each listed once, of a dtype moe-quant reads, its offsets holding exactly its
/// bytes (offsets still relative to the data region).
fn checked_tensors(path: &Path, raw: Vec<(String, RawTensor)>) -> Result<Vec<TensorInfo>> {
    let invalid = |message: String| Error::HeaderInvalid { path: path.to_path_buf(), message };
    let mut seen = HashSet::with_capacity(raw.len());
    if let Some((name, _)) = raw.iter().find(|(name, _)| !seen.insert(name.as_str())) {
        return Err(invalid(format!("tensor {name} is listed twice")));
    }
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, RawTensor { dtype, shape: Shape(shape), data_offsets: (start, end) }) in raw {
        let Some(dtype) = Dtype::from_name(&dtype) else {
            return Err(Error::UnsupportedDtype {
                path: path.to_path_buf(),
                tensor: name,
                dtype,
                supported: Dtype::SUPPORTED.to_string(),
            });
        };
        if end < start {
            return Err(invalid(format!("tensor {name}: data_offsets [{start}, {end}] run backwards")));
        }
        let Some(needed) = dtype.byte_len(&shape) else {
            return Err(invalid(format!("tensor {name}: {dtype} × {shape:?} is too large (its byte size overflows)")));
        };
        if needed != end - start {
            return Err(invalid(format!(
                "tensor {name}: data_offsets [{start}, {end}] hold {} bytes but {dtype} × {shape:?} needs {needed}",
                end - start
            )));
        }
        tensors.push(TensorInfo { name, dtype, shape, file: 0, start, end, form: StoredForm::Plain });
    }
    Ok(tensors)
}

/// The length of the data region of tensors sorted by offset, or what breaks their tiling (an overlap or a
/// gap, named with the tensors around it).
fn tiled_length(tensors: &[TensorInfo]) -> std::result::Result<usize, String> {
    let mut data_len = 0usize;
    for (i, tensor) in tensors.iter().enumerate() {
        if tensor.start != data_len {
            let (start, end) = (tensor.start, tensor.end);
            let previous = i.checked_sub(1).and_then(|p| tensors.get(p));
            return Err(match previous {
                Some(prev) if start < data_len => format!(
                    "tensor {}: data_offsets [{start}, {end}] overlap those of tensor {} [{}, {}]",
                    tensor.name, prev.name, prev.start, prev.end
                ),
                Some(prev) => format!(
                    "tensor {}: data_offsets [{start}, {end}] leave a gap of {} bytes after tensor {} [{}, {}]",
                    tensor.name,
                    start - data_len,
                    prev.name,
                    prev.start,
                    prev.end
                ),
                None => format!(
                    "tensor {}: data_offsets [{start}, {end}] leave a gap of {start} bytes at the start of the data",
                    tensor.name
                ),
            });
        }
        data_len = tensor.end;
    }
    Ok(data_len)
}

/// The header as written: tensors in header order, not yet checked against each other.
struct RawHeader {
    tensors: Vec<(String, RawTensor)>,
    metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Shape,
    data_offsets: (usize, usize),
}

/// A shape of at most [`MAX_RANK`] dimensions: a header cannot make the reader collect millions of them.
struct Shape(Vec<usize>);

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct ShapeVisitor;
        impl<'de> Visitor<'de> for ShapeVisitor {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array of at most {MAX_RANK} non-negative integers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Shape, A::Error> {
                let mut dims = Vec::new();
                while let Some(dim) = seq.next_element::<usize>()? {
                    if dims.len() == MAX_RANK {
                        return Err(serde::de::Error::custom(format_args!(
                            "shape has more than {MAX_RANK} dimensions"
                        )));
                    }
                    dims.push(dim);
                }
                Ok(Shape(dims))
            }
        }
        deserializer.deserialize_seq(ShapeVisitor)
    }
}

/// Parses the header JSON; an error inside a tensor's entry names the tensor.
fn parse_json(text: &str) -> std::result::Result<RawHeader, String> {
    let current = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = HeaderSeed { current: &current }.deserialize(&mut deserializer).and_then(|raw| {
        deserializer.end()?;
        Ok(raw)
    });
    parsed.map_err(|e| match current.take() {
        Some(entry) => format!("{entry}: {e}"),
        None => format!("header is not valid safetensors JSON: {e}"),
    })
}

/// Deserializes the top-level object, recording in `current` the entry being read so that errors name it
/// (`tensor <name>` or `__metadata__`).
struct HeaderSeed<'a> {
    current: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'_> {
    type Value = RawHeader;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<RawHeader, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed<'_> {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of tensor entries")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<RawHeader, A::Error> {
        let mut header = RawHeader { tensors: Vec::new(), metadata: BTreeMap::new() };
        while let Some(name) = map.next_key::<String>()? {
            if name == "__metadata__" {
                *self.current.borrow_mut() = Some("__metadata__ (a map of strings)".into());
                header.metadata = map.next_value::<Option<BTreeMap<String, String>>>()?.unwrap_or_default();
            } else {
                *self.current.borrow_mut() = Some(format!("tensor {name}"));
                let entry = map.next_value::<RawTensor>()?;
                header.tensors.push((name, entry));
            }
            *self.current.borrow_mut() = None;
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    fn parse(header: &str, data: &[u8]) -> Result<ParsedHeader> {
        parse_safetensors(Path::new("m.safetensors"), &file(header, data))
    }

    #[test]
    fn accepts_a_valid_file_and_makes_offsets_absolute() {
        let header = r#"{"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"format":"pt"}}"#;
        let parsed = parse(header, &[0; 6]).unwrap();
        let names: Vec<_> = parsed.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!((parsed.tensors[1].start, parsed.tensors[1].end), (8 + header.len() + 4, 8 + header.len() + 6));
        assert_eq!(parsed.metadata["format"], "pt");
    }

    #[test]
    fn errors_name_the_tensor() {
        let cases = [
            (r#"{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#, "tensor w"),
            (r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, "tensor w"),
            (r#"{"w":{"dtype":"F32","shape":[1]}}"#, "tensor w"),
            (r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, "tensor w"),
            (r#"{"__metadata__":{"a":1}}"#, "__metadata__ (a map of strings)"),
            (
                r#"{"w":{"dtype":"U8","shape":[],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[],"data_offsets":[1,2]}}"#,
                "w is listed twice",
            ),
        ];
        for (header, needle) in cases {
            let error = parse(header, &[0; 4]).unwrap_err();
            assert_eq!(error.code(), "E_CHECKPOINT_HEADER_INVALID", "{header}");
            assert!(error.to_string().contains(needle), "{error} lacks {needle}");
        }
    }

    #[test]
    fn offsets_summing_past_usize_max_do_not_overflow() {
        // Eight tensors of 2^61 - 1 bytes end at 2^64 - 8: safetensors 0.8 overflows adding the header length.
        let size = (1usize << 61) - 1;
        let entries: Vec<_> = (0..8)
            .map(|i| {
                format!(r#""t{i}":{{"dtype":"U8","shape":[{size}],"data_offsets":[{},{}]}}"#, i * size, (i + 1) * size)
            })
            .collect();
        let error = parse(&format!("{{{}}}", entries.join(",")), &[0; 16]).unwrap_err();
        assert_eq!(error.code(), "E_CHECKPOINT_TRUNCATED");
    }

    #[test]
    fn rank_is_bounded() {
        let shape = vec!["1"; MAX_RANK + 1].join(",");
        let error =
            parse(&format!(r#"{{"w":{{"dtype":"U8","shape":[{shape}],"data_offsets":[0,1]}}}}"#), &[0]).unwrap_err();
        assert!(error.to_string().contains("more than 64 dimensions"), "{error}");
    }
}
