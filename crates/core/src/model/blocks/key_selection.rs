//! DeepSeek sparse attention's choice of keys: for each query, the `top_k` keys of highest index score among those
//! the causal mask lets it see (all of them when it sees no more than `top_k`), and the additive attention mask
//! that restricts it to them. transformers adds the causal mask to the scores, takes `topk` of every row and
//! scatters the indices into the mask; torch breaks ties arbitrarily, here the earlier key wins.

use std::cmp::Ordering;

use candle_core::{Device, Tensor};

use super::ops::causal_mask;
use crate::error::{Error, Result};

/// The keys each query of one sequence attends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySelection {
    /// Every key up to the query's own position: the sequence is no longer than `top_k`.
    Causal,
    /// `len × len` bits, row-major: bit `s·len + t` is set when query `s` attends to key `t`.
    Chosen { len: usize, bits: Vec<u64> },
}

impl KeySelection {
    /// Whether query `query` attends to key `key`.
    pub fn attends(&self, query: usize, key: usize) -> bool {
        match self {
            KeySelection::Causal => key <= query,
            KeySelection::Chosen { len, bits } => {
                let bit = query * len + key;
                key < *len && bits[bit / 64] >> (bit % 64) & 1 == 1
            }
        }
    }

    /// The additive mask `[len, len]` (f32) of a sequence of `len` positions: 0 where a query attends to a key,
    /// -inf elsewhere.
    pub fn mask(&self, len: usize, device: &Device) -> Result<Tensor> {
        match self {
            KeySelection::Causal => causal_mask(len, device),
            KeySelection::Chosen { len: chosen, .. } if *chosen != len => {
                Err(Error::internal(format!("keys chosen for {chosen} positions applied to {len}")))
            }
            KeySelection::Chosen { .. } => {
                let mask: Vec<f32> = (0..len)
                    .flat_map(|q| (0..len).map(move |k| if self.attends(q, k) { 0.0 } else { f32::NEG_INFINITY }))
                    .collect();
                Ok(Tensor::from_vec(mask, (len, len), device)?)
            }
        }
    }
}

/// Builds the [`KeySelection`] of one sequence of `len` positions from its index scores, a few rows at a time.
pub struct KeyChooser {
    len: usize,
    top_k: usize,
    bits: Vec<u64>,
}

impl KeyChooser {
    pub fn new(len: usize, top_k: usize) -> Self {
        KeyChooser { len, top_k, bits: vec![0; (len * len).div_ceil(64)] }
    }

    /// Chooses the keys of queries `first..first + rows.len()`, `rows[i]` holding the scores of query `first + i`
    /// against every key (`len` of them; those after the query are not seen).
    pub fn add_rows(&mut self, first: usize, rows: &[Vec<f32>]) -> Result<()> {
        for (i, row) in rows.iter().enumerate() {
            let query = first + i;
            if query >= self.len || row.len() != self.len {
                return Err(Error::internal(format!(
                    "index scores of query {query}: {} keys of {}",
                    row.len(),
                    self.len
                )));
            }
            for key in top_keys(&row[..=query], self.top_k) {
                let bit = query * self.len + key;
                self.bits[bit / 64] |= 1 << (bit % 64);
            }
        }
        Ok(())
    }

    pub fn finish(self) -> KeySelection {
        KeySelection::Chosen { len: self.len, bits: self.bits }
    }
}

/// The indices of the `top_k` highest of `scores` (all of them when there are no more), the earlier one first
/// among equal scores; -0 equals +0, as in torch.
pub fn top_keys(scores: &[f32], top_k: usize) -> Vec<usize> {
    let mut keys: Vec<usize> = (0..scores.len()).collect();
    if top_k >= keys.len() {
        return keys;
    }
    if top_k == 0 {
        return Vec::new();
    }
    // `+ 0.0` turns -0 into +0, so that the total order sees them equal.
    let higher_first =
        |a: &usize, b: &usize| -> Ordering { (scores[*b] + 0.0).total_cmp(&(scores[*a] + 0.0)).then(a.cmp(b)) };
    keys.select_nth_unstable_by(top_k - 1, higher_first);
    keys.truncate(top_k);
    keys.sort_unstable();
    keys
}

/// The keys the last layer with an indexer chose for each sequence of one calibration batch, which layers without
/// an indexer (GLM-5's `shared` layers) reuse.
#[derive(Debug, Clone, Default)]
pub struct ChosenKeys {
    sequences: Option<Vec<KeySelection>>,
}

impl ChosenKeys {
    pub fn replace(&mut self, sequences: Vec<KeySelection>) {
        self.sequences = Some(sequences);
    }

    /// The keys of the last layer with an indexer.
    pub fn current(&self) -> Result<&[KeySelection]> {
        self.sequences.as_deref().ok_or_else(|| {
            Error::internal("a layer reuses the keys of an earlier indexer, but no earlier layer has one")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_scores_win_and_equal_scores_go_to_the_earlier_key() {
        assert_eq!(top_keys(&[0.5, -1.0, 2.0, 0.1, 0.5], 2), [0, 2]);
        assert_eq!(top_keys(&[0.5, -1.0, 2.0, 0.1, 0.5], 3), [0, 2, 4]);
        assert_eq!(top_keys(&[0.0, -0.0, 0.0], 1), [0]);
        assert_eq!(top_keys(&[-0.0, 0.0, -3.0], 1), [0]);
        assert_eq!(top_keys(&[1.0, 2.0], 5), [0, 1]);
        assert_eq!(top_keys(&[1.0, 2.0], 0), Vec::<usize>::new());
    }

    /// Index scores `[6, 6]` (query rows; entries after the diagonal are what the causal mask hides) and the keys
    /// transformers keeps with `index_topk` 3: `(scores + causal mask).topk(3).indices` scattered into the mask
    /// (DeepseekV32Attention), which gives, row by row, the keys below.
    #[test]
    fn the_mask_keeps_the_keys_transformers_keeps() {
        let scores = [
            [0.31, 0.92, -0.40, 0.77, 0.05, -0.63],
            [-0.12, 0.58, 0.44, -0.91, 0.36, 0.20],
            [0.87, -0.25, 0.13, 0.69, -0.48, 0.52],
            [0.02, 0.71, -0.33, 0.15, 0.94, -0.07],
            [-0.56, 0.29, 0.83, -0.14, 0.41, 0.66],
            [0.48, -0.72, 0.09, 0.35, 0.61, -0.19],
        ];
        let kept: [&[usize]; 6] = [&[0], &[0, 1], &[0, 1, 2], &[0, 1, 3], &[1, 2, 4], &[0, 3, 4]];
        let mut chooser = KeyChooser::new(6, 3);
        chooser.add_rows(0, &scores[..2].iter().map(|r| r.to_vec()).collect::<Vec<_>>()).unwrap();
        chooser.add_rows(2, &scores[2..].iter().map(|r| r.to_vec()).collect::<Vec<_>>()).unwrap();
        let selection = chooser.finish();
        let mask = selection.mask(6, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        for (query, (keys, row)) in kept.iter().zip(&mask).enumerate() {
            for (key, &value) in row.iter().enumerate() {
                let attends = keys.contains(&key);
                assert_eq!(selection.attends(query, key), attends, "query {query}, key {key}");
                assert_eq!(value, if attends { 0.0 } else { f32::NEG_INFINITY }, "query {query}, key {key}");
            }
        }
        assert!(selection.mask(5, &Device::Cpu).is_err());
        let causal = KeySelection::Causal.mask(3, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(causal[1], [0.0, 0.0, f32::NEG_INFINITY]);
    }

    #[test]
    fn layers_without_an_indexer_need_an_earlier_choice() {
        let mut chosen = ChosenKeys::default();
        assert!(chosen.current().is_err());
        chosen.replace(vec![KeySelection::Causal]);
        assert_eq!(chosen.current().unwrap(), [KeySelection::Causal]);
    }
}
