//! E2M1 (FP4) codes, as NVFP4 stores them: 3 bits of magnitude indexing the grid {0, 0.5, 1, 1.5, 2, 3, 4, 6}
//! and the sign in bit 3; two codes per byte, the even-indexed element in the low nibble.
//!
//! Rounding follows ModelOpt's `NVFP4QTensor._cast_fp4`: a `searchsorted` over the midpoints
//! {0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5} plus one where the value equals 0.75, 1.75 or 3.5, which is round to
//! nearest with ties to the even grid index; everything above 5 saturates at 6. The sign bit is set for every
//! value below zero, so -0.0 gives code 0x0 while -0.1 (rounded to zero) gives 0x8.

/// Largest E2M1 magnitude.
pub const E2M1_MAX: f32 = 6.0;
/// The magnitudes indexed by the low 3 bits of a code.
pub const E2M1_GRID: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

/// The code of a value already divided by its block scale.
#[inline]
pub fn e2m1_code(value: f32) -> u8 {
    // Bit 3 is the f32 sign bit, kept only for values below zero (-0.0 has the sign bit but gets code 0).
    // Written with 32-bit lanes and this masking because it vectorizes ~20% faster than `u8::from(value < 0.0) << 3`.
    let below_zero = u32::from(value < 0.0) * 0xF;
    let sign = (value.to_bits() >> 28) & 0x8 & below_zero;
    let a = value.abs();
    // A strict comparison sends the tie down (to the even index below), `>=` sends it up (to the even index above).
    let index = u32::from(a > 0.25)
        + u32::from(a >= 0.75)
        + u32::from(a > 1.25)
        + u32::from(a >= 1.75)
        + u32::from(a > 2.5)
        + u32::from(a >= 3.5)
        + u32::from(a > 5.0);
    (index | sign) as u8
}

/// The value of a code (bit 3 is the sign).
#[inline]
pub fn e2m1_to_f32(code: u8) -> f32 {
    let magnitude = E2M1_GRID[usize::from(code & 0x7)];
    if code & 0x8 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// The obviously correct rounding the fast one is tested against: the nearest grid value, ties to the even
/// index, saturating at 6.
pub fn e2m1_code_reference(value: f32) -> u8 {
    let sign = if value < 0.0 { 0x8 } else { 0x0 };
    let target = value.abs().min(E2M1_MAX);
    let mut best = 0u8;
    let mut best_distance = f32::INFINITY;
    for (index, grid) in (0u8..).zip(E2M1_GRID) {
        let distance = (grid - target).abs();
        if distance < best_distance || (distance == best_distance && index % 2 == 0) {
            best = index;
            best_distance = distance;
        }
    }
    sign | best
}

/// Packs two codes into a byte: `even` (the element at the even index) in the low nibble.
#[inline]
pub fn pack_pair(even: u8, odd: u8) -> u8 {
    (even & 0x0F) | (odd << 4)
}

/// Packs `codes` (an even number of them) into `packed` (half as many bytes), pairwise in order.
pub fn pack_codes(codes: &[u8], packed: &mut [u8]) {
    for (byte, pair) in packed.iter_mut().zip(codes.chunks_exact(2)) {
        *byte = pack_pair(pair[0], pair[1]);
    }
}

/// The two codes of a packed byte, the even-indexed element first.
#[inline]
pub fn unpack_pair(byte: u8) -> (u8, u8) {
    (byte & 0x0F, byte >> 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_values_are_exact() {
        for (index, value) in (0u8..).zip(E2M1_GRID) {
            assert_eq!(e2m1_code(value), index);
            assert_eq!(e2m1_to_f32(index), value);
            if value > 0.0 {
                assert_eq!(e2m1_code(-value), 0x8 | index);
                assert_eq!(e2m1_to_f32(0x8 | index), -value);
            }
        }
    }

    #[test]
    fn ties_go_to_the_even_index() {
        // (midpoint, code): 0.25 → 0 (index 0), 0.75 → 1.0 (2), 1.25 → 1.0 (2), 1.75 → 2.0 (4), 2.5 → 2.0 (4),
        // 3.5 → 4.0 (6), 5 → 4.0 (6).
        let expected = [(0.25, 0), (0.75, 2), (1.25, 2), (1.75, 4), (2.5, 4), (3.5, 6), (5.0, 6)];
        for (tie, code) in expected {
            assert_eq!(e2m1_code(tie), code, "tie {tie}");
            assert_eq!(e2m1_code(-tie), 0x8 | code, "tie -{tie}");
            assert_eq!(e2m1_code_reference(tie), code);
        }
        assert_eq!(e2m1_code(0.25f32.next_up()), 1);
        assert_eq!(e2m1_code(0.75f32.next_down()), 1);
        assert_eq!(e2m1_code(5.0f32.next_up()), 7);
    }

    #[test]
    fn saturates_at_six() {
        assert_eq!(e2m1_code(6.0), 7);
        assert_eq!(e2m1_code(7.0), 7);
        assert_eq!(e2m1_code(1e30), 7);
        assert_eq!(e2m1_code(f32::INFINITY), 7);
        assert_eq!(e2m1_code(-100.0), 0xF);
    }

    #[test]
    fn sign_of_zero_and_tiny_negatives() {
        assert_eq!(e2m1_code(0.0), 0x0);
        assert_eq!(e2m1_code(-0.0), 0x0, "ModelOpt tests value < 0, false for -0.0");
        assert_eq!(e2m1_code(-0.1), 0x8, "rounds to zero but keeps the sign");
        assert_eq!(e2m1_code(-0.25), 0x8);
        assert_eq!(e2m1_code(0.1), 0x0);
    }

    #[test]
    fn fast_rounding_matches_the_reference() {
        let mut value = -7.0f32;
        while value <= 7.0 {
            for v in [value, value.next_up(), value.next_down()] {
                assert_eq!(e2m1_code(v), e2m1_code_reference(v), "value {v}");
            }
            value += 1.0 / 128.0;
        }
    }

    #[test]
    fn packs_even_element_in_the_low_nibble() {
        assert_eq!(pack_pair(0x1, 0xA), 0xA1);
        assert_eq!(unpack_pair(0xA1), (0x1, 0xA));
        let codes = [0x1, 0x2, 0x3, 0x4, 0xF, 0x0];
        let mut packed = [0u8; 3];
        pack_codes(&codes, &mut packed);
        assert_eq!(packed, [0x21, 0x43, 0x0F]);
    }
}
