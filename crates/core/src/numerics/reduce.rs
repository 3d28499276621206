//! Reductions over f32 values that the formats and the checkpoint checks share.

/// max |v| over the values (0 for none; NaN values are skipped, callers reject them separately).
pub fn weight_amax(values: &[f32]) -> f32 {
    // Eight independent lanes let the compiler vectorize the reduction.
    let mut lanes = [0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(v.abs());
        }
    }
    let tail = chunks.remainder().iter().fold(0f32, |m, v| m.max(v.abs()));
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

/// Index of the first NaN or infinite value.
pub fn first_non_finite(values: &[f32]) -> Option<usize> {
    const CHUNK: usize = 1024;
    for (c, chunk) in values.chunks(CHUNK).enumerate() {
        // A branch-free pass over the chunk; the position is looked up only when something was found.
        let all_finite = chunk.iter().fold(true, |ok, v| ok & v.is_finite());
        if !all_finite {
            let within = chunk.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Some(c * CHUNK + within);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amax_is_the_largest_magnitude() {
        assert_eq!(weight_amax(&[]), 0.0);
        assert_eq!(weight_amax(&[-0.0]), 0.0);
        let values: Vec<f32> = (0..37).map(|i| (i as f32 - 20.0) * 0.5).collect();
        assert_eq!(weight_amax(&values), 10.0);
        assert_eq!(weight_amax(&[1.0, -3.0, 2.0]), 3.0);
    }

    #[test]
    fn finds_the_first_non_finite_value() {
        let mut values = vec![1.0f32; 3000];
        assert_eq!(first_non_finite(&values), None);
        values[2500] = f32::NAN;
        values[2900] = f32::INFINITY;
        assert_eq!(first_non_finite(&values), Some(2500));
        values[7] = f32::NEG_INFINITY;
        assert_eq!(first_non_finite(&values), Some(7));
    }
}
