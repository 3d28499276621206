//! Where each declared tensor goes: the shards (filled in declaration order up to the size limit), each
//! shard's safetensors header, every tensor's byte offset in its shard, and the index of a sharded output.
//! Nothing here touches the disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use safetensors::tensor::Metadata;

use crate::checkpoint::{Dtype, SINGLE_FILE};
use crate::error::{Error, Result};
use crate::limits::MAX_HEADER_BYTES;

/// A tensor to be written, as [`CheckpointWriter::declare`](super::CheckpointWriter::declare) takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorLayout {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

/// Where a declared tensor's bytes go.
struct Placement {
    shard: usize,
    /// Byte offset in the shard file.
    offset: u64,
    dtype: Dtype,
    shape: Vec<usize>,
    written: bool,
}

/// One shard file of the output. Its file is opened for each write rather than held open: a run with many
/// shards holds no descriptors, and the file system keeps no writer between them.
pub(super) struct Shard {
    /// The file in the temporary directory, under its temporary name.
    pub path: PathBuf,
    /// The file's first bytes: the header's length (8 bytes, little-endian), then the header.
    pub head: Vec<u8>,
    /// The file's length once every tensor is in.
    pub len: u64,
    /// Its tensors, in declaration order.
    tensors: Vec<String>,
    /// Declared tensors not written yet.
    missing: usize,
    /// Bytes written since the file's write-back to disk last started.
    unsent: u64,
}

/// A shard's write-back to disk starts whenever this many bytes were written to it since the last start (and
/// once its last tensor is in): the disk writes while the run goes on, instead of taking the whole output at
/// the sync before publishing.
pub(super) const WRITEBACK_EVERY: u64 = 64 << 20;

/// Where one tensor's bytes are to be written.
pub(super) struct Slot<'a> {
    pub path: &'a Path,
    pub offset: u64,
    /// The shard's index, for [`Layout::wrote`].
    pub shard: usize,
}

/// Every declared tensor's place in the output.
pub(super) struct Layout {
    pub shards: Vec<Shard>,
    placements: HashMap<String, Placement>,
    /// Sum of the tensors' data bytes (the index's `total_size`).
    pub tensor_bytes: u64,
}

/// One tensor of a shard, as its header describes it.
struct HeaderEntry<'a> {
    name: &'a str,
    dtype: Dtype,
    shape: &'a [usize],
    /// Bytes of data.
    len: usize,
}

impl Layout {
    /// Lays `tensors` out in shards under `dir`: a shard is full when the next tensor would take it past
    /// `max_shard_bytes`, so a tensor larger than that gets a shard of its own. With no tensors at all, the
    /// output is one shard without tensors, a valid empty checkpoint.
    pub fn plan(tensors: &[TensorLayout], max_shard_bytes: u64, dir: &Path) -> Result<Layout> {
        let mut groups: Vec<Vec<HeaderEntry<'_>>> = vec![Vec::new()];
        let mut group_bytes = 0u64;
        let mut seen = HashSet::new();
        for tensor in tensors {
            if !seen.insert(tensor.name.as_str()) {
                return Err(Error::internal(format!("tensor {} was declared twice", tensor.name)));
            }
            let len = tensor.dtype.byte_len(&tensor.shape).ok_or_else(|| Error::ShapeInvalid {
                tensor: tensor.name.clone(),
                shape: tensor.shape.clone(),
                message: "holds more than usize::MAX bytes".into(),
            })?;
            let entry = HeaderEntry { name: &tensor.name, dtype: tensor.dtype, shape: &tensor.shape, len };
            match groups.last_mut() {
                Some(group) if group.is_empty() || group_bytes.saturating_add(len as u64) <= max_shard_bytes => {
                    group.push(entry);
                    group_bytes = group_bytes.saturating_add(len as u64);
                }
                _ => {
                    groups.push(vec![entry]);
                    group_bytes = len as u64;
                }
            }
        }
        let mut layout =
            Layout { shards: Vec::with_capacity(groups.len()), placements: HashMap::new(), tensor_bytes: 0 };
        for group in &groups {
            layout.add_shard(group, dir)?;
        }
        Ok(layout)
    }

    /// Places the tensors of one shard after its header.
    fn add_shard(&mut self, group: &[HeaderEntry<'_>], dir: &Path) -> Result<()> {
        let k = self.shards.len();
        let path = dir.join(format!("shard-{k}"));
        let (header, order) = shard_header(group, &path)?;
        let mut head = Vec::with_capacity(8 + header.len());
        head.extend_from_slice(&(header.len() as u64).to_le_bytes());
        head.extend_from_slice(&header);
        let mut offset = head.len() as u64;
        for &i in &order {
            let entry = &group[i];
            let placement =
                Placement { shard: k, offset, dtype: entry.dtype, shape: entry.shape.to_vec(), written: false };
            self.placements.insert(entry.name.to_string(), placement);
            offset += entry.len as u64;
            self.tensor_bytes += entry.len as u64;
        }
        let tensors = group.iter().map(|e| e.name.to_string()).collect();
        self.shards.push(Shard { path, head, len: offset, tensors, missing: group.len(), unsent: 0 });
        Ok(())
    }

    /// Whether the tensor `name` was written already.
    pub fn is_written(&self, name: &str) -> bool {
        self.placements.get(name).is_some_and(|p| p.written)
    }

    /// Takes the place of the declared tensor `name`, which must come with its declared dtype and shape.
    pub fn claim(&mut self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<Slot<'_>> {
        let Some(placement) = self.placements.get_mut(name) else {
            return Err(Error::internal(format!("tensor {name} was not declared before the output was written")));
        };
        if placement.dtype != dtype || placement.shape != shape {
            return Err(Error::ShapeInvalid {
                tensor: name.to_string(),
                shape: shape.to_vec(),
                message: format!(
                    "{dtype} {shape:?} does not match the declared {} {:?}",
                    placement.dtype, placement.shape
                ),
            });
        }
        if placement.written {
            return Err(Error::internal(format!("tensor {name} was written twice")));
        }
        let Some(shard) = self.shards.get_mut(placement.shard) else {
            return Err(Error::internal(format!("tensor {name} was placed in a shard that does not exist")));
        };
        placement.written = true;
        shard.missing -= 1;
        Ok(Slot { path: &shard.path, offset: placement.offset, shard: placement.shard })
    }

    /// Counts `bytes` written to shard `shard` (`tensor_done`: the last of a claimed tensor's), and says whether its
    /// write-back to disk is to start now: [`WRITEBACK_EVERY`] bytes were written to it since the last start, or
    /// its last tensor is in.
    pub fn wrote(&mut self, shard: usize, bytes: u64, tensor_done: bool) -> bool {
        let Some(shard) = self.shards.get_mut(shard) else { return false };
        shard.unsent += bytes;
        let start = shard.unsent >= WRITEBACK_EVERY || (tensor_done && shard.missing == 0);
        if start {
            shard.unsent = 0;
        }
        start
    }

    /// The error for declared tensors that were never written, if any.
    pub fn check_complete(&self) -> Result<()> {
        let mut missing: Vec<&String> = self.placements.iter().filter(|(_, p)| !p.written).map(|(n, _)| n).collect();
        missing.sort();
        match missing.first() {
            None => Ok(()),
            Some(first) => {
                Err(Error::internal(format!("{} declared tensor(s) were never written, first {first}", missing.len())))
            }
        }
    }

    /// The published name of shard `k`: `model.safetensors` alone, `model-0000k-of-0000n.safetensors` among
    /// several.
    pub fn final_name(&self, k: usize) -> String {
        let count = self.shards.len();
        if count == 1 {
            SINGLE_FILE.to_string()
        } else {
            format!("model-{:05}-of-{count:05}.safetensors", k + 1)
        }
    }

    /// The text of `model.safetensors.index.json`: which published shard holds each tensor.
    pub fn index_json(&self) -> Result<String> {
        let mut weight_map = BTreeMap::new();
        for (k, shard) in self.shards.iter().enumerate() {
            let name = self.final_name(k);
            for tensor in &shard.tensors {
                weight_map.insert(tensor.as_str(), name.clone());
            }
        }
        let index = serde_json::json!({
            "metadata": { "total_size": self.tensor_bytes },
            "weight_map": weight_map,
        });
        let text = serde_json::to_string_pretty(&index).map_err(|e| Error::internal(e.to_string()))?;
        Ok(format!("{text}\n"))
    }
}

/// The safetensors header of a shard and the order of its tensors in the file (indices into `entries`),
/// exactly as `safetensors::serialize_to_file` lays them out (tensors by descending dtype alignment, then by
/// name; the JSON padded with spaces to a multiple of 8; `{"format": "pt"}` metadata), so outputs keep the
/// same bytes; built here so that the writer can put each tensor at its offset as soon as it exists.
fn shard_header(entries: &[HeaderEntry<'_>], path: &Path) -> Result<(Vec<u8>, Vec<usize>)> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&entries[a], &entries[b]);
        b.dtype.to_safetensors().cmp(&a.dtype.to_safetensors()).then(a.name.cmp(b.name))
    });
    let mut offset = 0;
    let mut infos = Vec::with_capacity(order.len());
    for &i in &order {
        let entry = &entries[i];
        let end = offset + entry.len;
        infos.push((
            entry.name.to_string(),
            safetensors::tensor::TensorInfo {
                dtype: entry.dtype.to_safetensors(),
                shape: entry.shape.to_vec(),
                data_offsets: (offset, end),
            },
        ));
        offset = end;
    }
    let internal = |e: &dyn std::fmt::Display| Error::internal(format!("serializing {}: {e}", path.display()));
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let metadata = Metadata::new(Some(metadata), infos).map_err(|e| internal(&e))?;
    let mut header = serde_json::to_string(&metadata).map_err(|e| internal(&e))?.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    if header.len() as u64 > MAX_HEADER_BYTES {
        return Err(internal(&format!("the header is {} bytes, more than safetensors allows", header.len())));
    }
    Ok((header, order))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(entries: &[(&str, Dtype, &[usize])]) -> Vec<TensorLayout> {
        entries
            .iter()
            .map(|&(name, dtype, shape)| TensorLayout { name: name.into(), dtype, shape: shape.to_vec() })
            .collect()
    }

    fn names(layout: &Layout) -> Vec<Vec<&str>> {
        layout.shards.iter().map(|s| s.tensors.iter().map(String::as_str).collect()).collect()
    }

    /// Tensor sizes, the shard limit, and each shard's tensors.
    type Grouping = (&'static [usize], u64, &'static [&'static [&'static str]]);

    #[test]
    fn shards_fill_in_declaration_order_until_the_next_tensor_would_pass_the_limit() {
        let u8s = |sizes: &[usize]| -> Vec<TensorLayout> {
            sizes
                .iter()
                .enumerate()
                .map(|(k, &n)| TensorLayout { name: format!("t{k}"), dtype: Dtype::U8, shape: vec![n] })
                .collect()
        };
        let dir = Path::new("/out/.tmp");
        let cases: [Grouping; 5] = [
            (&[10, 100, 10], 32, &[&["t0"], &["t1"], &["t2"]]),
            (&[16, 16, 1], 32, &[&["t0", "t1"], &["t2"]]),
            (&[40, 1, 31], 32, &[&["t0"], &["t1", "t2"]]),
            (&[5, 5, 5], u64::MAX, &[&["t0", "t1", "t2"]]),
            (&[0, 3, 0], 0, &[&["t0"], &["t1"], &["t2"]]),
        ];
        for (sizes, max, expected) in cases {
            let layout = Layout::plan(&u8s(sizes), max, dir).unwrap();
            assert_eq!(names(&layout), expected, "{sizes:?} in shards of {max}");
            assert_eq!(layout.tensor_bytes, sizes.iter().sum::<usize>() as u64);
            let paths: Vec<PathBuf> = (0..expected.len()).map(|k| dir.join(format!("shard-{k}"))).collect();
            assert_eq!(layout.shards.iter().map(|s| s.path.clone()).collect::<Vec<_>>(), paths);
        }
        let empty = Layout::plan(&[], 32, dir).unwrap();
        assert_eq!(names(&empty), [Vec::<&str>::new()], "no tensors: one empty shard");
        assert_eq!(empty.final_name(0), SINGLE_FILE);
    }

    #[test]
    fn a_shard_has_the_header_and_offsets_of_safetensors_serialize() {
        let tensors = declared(&[
            ("b.weight", Dtype::U8, &[3, 5]),
            ("a.weight", Dtype::BF16, &[2, 3]),
            ("a.scale", Dtype::F32, &[]),
            ("c", Dtype::F8E4M3, &[7]),
            ("z", Dtype::F64, &[1]),
        ]);
        let data: Vec<Vec<u8>> = tensors
            .iter()
            .enumerate()
            .map(|(k, t)| (0..t.dtype.byte_len(&t.shape).unwrap()).map(|i| (i * 7 + k * 31) as u8).collect())
            .collect();
        let views = tensors.iter().zip(&data).map(|(t, d)| {
            (&t.name, safetensors::tensor::TensorView::new(t.dtype.to_safetensors(), t.shape.clone(), d).unwrap())
        });
        let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
        let theirs = safetensors::serialize(views, metadata).unwrap();

        let mut layout = Layout::plan(&tensors, u64::MAX, Path::new("/out")).unwrap();
        let shard = &layout.shards[0];
        assert_eq!(shard.head[..], theirs[..shard.head.len()]);
        assert_eq!(shard.len, theirs.len() as u64);
        for (k, (tensor, bytes)) in tensors.iter().zip(&data).enumerate() {
            let slot = layout.claim(&tensor.name, tensor.dtype, &tensor.shape).unwrap();
            let (offset, shard) = (slot.offset as usize, slot.shard);
            assert_eq!(theirs[offset..offset + bytes.len()], bytes[..], "{}", tensor.name);
            let start = layout.wrote(shard, bytes.len() as u64, true);
            assert_eq!(start, k == tensors.len() - 1, "{}", tensor.name);
        }
        let again = layout.claim("c", Dtype::F8E4M3, &[7]).err().map(|e| e.to_string());
        assert_eq!(again.as_deref(), Some("internal error: tensor c was written twice"));
        layout.check_complete().unwrap();
    }

    #[test]
    fn a_shard_starts_its_write_back_every_so_many_bytes_and_at_its_last_tensor() {
        // Five tensors of 40 MiB in one shard, and one of a byte in the next: 40, 80 (start), 40, 80 (start),
        // 40 and the last (start); the small shard's only tensor is its last.
        let size = 40 << 20;
        assert!((size as u64) < WRITEBACK_EVERY && 2 * size as u64 >= WRITEBACK_EVERY, "the counts below");
        let names: Vec<String> = (0..6).map(|k| format!("t{k}")).collect();
        let mut tensors: Vec<TensorLayout> = names[..5]
            .iter()
            .map(|name| TensorLayout { name: name.clone(), dtype: Dtype::U8, shape: vec![size] })
            .collect();
        tensors.push(TensorLayout { name: names[5].clone(), dtype: Dtype::U8, shape: vec![1] });
        let mut layout = Layout::plan(&tensors, 5 * size as u64, Path::new("/out")).unwrap();
        assert_eq!(layout.shards.len(), 2);
        let mut write = |t: &TensorLayout| {
            let shard = layout.claim(&t.name, t.dtype, &t.shape).unwrap().shard;
            layout.wrote(shard, t.dtype.byte_len(&t.shape).unwrap() as u64, true)
        };
        let starts: Vec<bool> = tensors.iter().map(&mut write).collect();
        assert_eq!(starts, [false, true, false, true, true, true]);
        // Written in parts, a tensor counts part by part: 24 MiB, then 24 (48 in the shard), then 24 (72: start).
        let part = 24 << 20;
        let tensors = [TensorLayout { name: "big".into(), dtype: Dtype::U8, shape: vec![3 * part] }];
        let mut layout = Layout::plan(&tensors, u64::MAX, Path::new("/out")).unwrap();
        let shard = layout.claim("big", Dtype::U8, &[3 * part]).unwrap().shard;
        let starts: Vec<bool> = (0..3).map(|k| layout.wrote(shard, part as u64, k == 2)).collect();
        assert_eq!(starts, [false, false, true]);
    }

    #[test]
    fn the_index_maps_every_tensor_to_its_published_shard() {
        let tensors = declared(&[("x", Dtype::U8, &[8]), ("w", Dtype::U8, &[8]), ("v", Dtype::F32, &[1])]);
        let layout = Layout::plan(&tensors, 8, Path::new("/out")).unwrap();
        let expected = "{\n  \"metadata\": {\n    \"total_size\": 20\n  },\n  \"weight_map\": {\n    \
                        \"v\": \"model-00003-of-00003.safetensors\",\n    \
                        \"w\": \"model-00002-of-00003.safetensors\",\n    \
                        \"x\": \"model-00001-of-00003.safetensors\"\n  }\n}\n";
        assert_eq!(layout.index_json().unwrap(), expected);
        let error = layout.check_complete().unwrap_err().to_string();
        assert!(error.contains("3 declared tensor(s) were never written, first v"), "{error}");
    }
}
