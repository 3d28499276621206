//! FP8 E4M3 ("fn" variant: bias 7, no infinities, 0x7F/0xFF are NaN, max 448) encoding and decoding, and the
//! rounding of f32 values to bf16 / f16 that ModelOpt's division in the weight's dtype implies.
//!
//! Encoding rounds to nearest, ties to even, and saturates at ±448, as torch 2.15's `.to(torch.float8_e4m3fn)`
//! does after ModelOpt's own clamps; values at or below 2^-10 (half the smallest subnormal) become ±0.

use super::Dtype;

/// Largest finite E4M3 value.
pub const E4M3_MAX: f32 = 448.0;
/// Smallest positive (subnormal) E4M3 value, 2^-9.
pub const E4M3_MIN_SUBNORMAL: f32 = 1.0 / 512.0;
/// Smallest positive normal E4M3 value, 2^-6.
const E4M3_MIN_NORMAL: f32 = 1.0 / 64.0;
/// The byte of +NaN.
pub const E4M3_NAN: u8 = 0x7F;

/// Encodes one value: saturating at ±448, round to nearest even, sign kept (so -0.0 → 0x80); NaN → 0x7F with
/// the NaN's sign bit (torch writes 0xFF for the negative NaN that 0/0 gives on x86).
///
/// Branch-free (both ranges are computed, then selected), so loops over it vectorize.
#[inline]
pub fn f32_to_e4m3(value: f32) -> u8 {
    let bits = value.to_bits();
    let sign = (bits >> 24) & 0x80;
    let magnitude = f32::from_bits(bits & 0x7FFF_FFFF);
    let clamped = magnitude.min(E4M3_MAX);
    // Subnormal range (below 2^-6): adding 2^14 leaves the value in units of 2^-9 (the ulp of 2^14) in the low
    // mantissa bits, rounded half to even by the addition itself. A result of 8 is 2^-6, which is also the
    // first normal's encoding (exponent 1, mantissa 0).
    let subnormal = (clamped + 16384.0).to_bits().wrapping_sub(16384f32.to_bits());
    // Normal range: keep 3 of the 23 mantissa bits, rounding half to even (a carry moves into the exponent),
    // then re-bias the exponent from 127 to 7.
    let m = clamped.to_bits();
    let normal = ((m + 0x7_FFFF + ((m >> 20) & 1)) >> 20).wrapping_sub((127 - 7) << 3);
    let code = if clamped < E4M3_MIN_NORMAL { subnormal } else { normal };
    let code = if magnitude.is_nan() { u32::from(E4M3_NAN) } else { code };
    (sign | code) as u8
}

/// Decodes one byte (exactly: every E4M3 value is an f32).
#[inline]
pub fn e4m3_to_f32(byte: u8) -> f32 {
    let sign = u32::from(byte & 0x80) << 24;
    let exponent = u32::from((byte >> 3) & 0x0F);
    let mantissa = u32::from(byte & 0x07);
    let magnitude = if byte & 0x7F == E4M3_NAN {
        f32::NAN
    } else if exponent == 0 {
        mantissa as f32 * E4M3_MIN_SUBNORMAL
    } else {
        // Re-bias the exponent from 7 to 127 and widen the mantissa from 3 to 23 bits.
        f32::from_bits(((exponent + 127 - 7) << 23) | (mantissa << 20))
    };
    f32::from_bits(magnitude.to_bits() | sign)
}

/// The obviously correct encoder the fast one is tested against: the nearest of all 127 non-negative codes,
/// ties to the even code, after clamping to ±448.
pub fn f32_to_e4m3_reference(value: f32) -> u8 {
    if value.is_nan() {
        return if value.is_sign_negative() { 0x80 | E4M3_NAN } else { E4M3_NAN };
    }
    let sign = if value.is_sign_negative() { 0x80 } else { 0x00 };
    let target = f64::from(value.abs().min(E4M3_MAX));
    let mut best = 0u8;
    let mut best_distance = f64::INFINITY;
    for code in 0u8..E4M3_NAN {
        let distance = (f64::from(e4m3_to_f32(code)) - target).abs();
        if distance < best_distance || (distance == best_distance && code % 2 == 0) {
            best = code;
            best_distance = distance;
        }
    }
    sign | best
}

/// Rounds an f32 to the nearest bf16 (ties to even), returned as f32.
#[inline]
pub fn round_to_bf16(value: f32) -> f32 {
    half::bf16::from_f32(value).to_f32()
}

/// Rounds an f32 to the nearest f16 (ties to even, overflow to infinity), returned as f32.
#[inline]
pub fn round_to_f16(value: f32) -> f32 {
    half::f16::from_f32(value).to_f32()
}

/// Rounds an f32 to `dtype` when it is bf16 or f16 (what a torch division in that dtype produces from its f32
/// intermediate); any other dtype leaves the value unchanged.
#[inline]
pub fn round_to_dtype(value: f32, dtype: Dtype) -> f32 {
    match dtype {
        Dtype::BF16 => round_to_bf16(value),
        Dtype::F16 => round_to_f16(value),
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), so tests need no dependency.
    fn random_bits(state: &mut u64) -> u32 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    #[test]
    fn decodes_the_edges() {
        assert_eq!(e4m3_to_f32(0x00), 0.0);
        assert!(e4m3_to_f32(0x80).is_sign_negative());
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(e4m3_to_f32(0xFE), -448.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x07), 7.0 * 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6));
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert!(e4m3_to_f32(0x7F).is_nan());
        assert!(e4m3_to_f32(0xFF).is_nan());
    }

    #[test]
    fn every_code_round_trips() {
        for byte in 0u8..=255 {
            if byte & 0x7F == E4M3_NAN {
                continue;
            }
            assert_eq!(f32_to_e4m3(e4m3_to_f32(byte)), byte, "byte {byte:#04x}");
        }
    }

    #[test]
    fn midpoints_round_to_the_even_code() {
        for code in 0u8..0x7E {
            let low = e4m3_to_f32(code);
            let high = e4m3_to_f32(code + 1);
            let middle = (low + high) / 2.0;
            let even = if code % 2 == 0 { code } else { code + 1 };
            assert_eq!(f32_to_e4m3(middle), even, "midpoint of {code:#04x} and {:#04x}", code + 1);
            assert_eq!(f32_to_e4m3(-middle), 0x80 | even);
            assert_eq!(f32_to_e4m3(middle.next_down()), code);
            assert_eq!(f32_to_e4m3(middle.next_up()), code + 1);
        }
        // Hand-checked: 1.0625 lies between 1.0 (0x38) and 1.125 (0x39); 1.1875 between 0x39 and 1.25 (0x3A).
        assert_eq!(f32_to_e4m3(1.0625), 0x38);
        assert_eq!(f32_to_e4m3(1.1875), 0x3A);
    }

    #[test]
    fn subnormals_and_zero() {
        assert_eq!(f32_to_e4m3(0.0), 0x00);
        assert_eq!(f32_to_e4m3(-0.0), 0x80);
        assert_eq!(f32_to_e4m3(2f32.powi(-10)), 0x00, "2^-10 is the tie between 0 and 2^-9: even wins");
        assert_eq!(f32_to_e4m3(2f32.powi(-10).next_up()), 0x01);
        assert_eq!(f32_to_e4m3(-2f32.powi(-10)), 0x80);
        assert_eq!(f32_to_e4m3(3.0 * 2f32.powi(-10)), 0x02, "1.5 units: tie to even 2");
        assert_eq!(f32_to_e4m3(5.0 * 2f32.powi(-10)), 0x02, "2.5 units: tie to even 2");
        assert_eq!(f32_to_e4m3(15.0 * 2f32.powi(-10)), 0x08, "7.5 units: tie to 8, the first normal");
        assert_eq!(f32_to_e4m3(1e-30), 0x00);
        assert_eq!(f32_to_e4m3(f32::from_bits(1)), 0x00);
    }

    #[test]
    fn saturates_and_keeps_nan() {
        assert_eq!(f32_to_e4m3(448.0), 0x7E);
        assert_eq!(f32_to_e4m3(464.0), 0x7E);
        assert_eq!(f32_to_e4m3(470.0), 0x7E);
        assert_eq!(f32_to_e4m3(1e30), 0x7E);
        assert_eq!(f32_to_e4m3(f32::INFINITY), 0x7E);
        assert_eq!(f32_to_e4m3(f32::NEG_INFINITY), 0xFE);
        assert_eq!(f32_to_e4m3(-1000.0), 0xFE);
        assert_eq!(f32_to_e4m3(f32::NAN), 0x7F);
        assert_eq!(f32_to_e4m3(-f32::NAN), 0xFF);
    }

    #[test]
    fn fast_encoder_matches_the_reference() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            // Random bit patterns cover every exponent; the second value lands in E4M3's own range.
            let bits = random_bits(&mut state);
            let any = f32::from_bits(bits);
            let near = f32::from_bits((bits & 0x807F_FFFF) | ((bits % 24 + 112) << 23));
            for value in [any, near] {
                assert_eq!(
                    f32_to_e4m3(value),
                    f32_to_e4m3_reference(value),
                    "value {value:e} ({:#010x})",
                    value.to_bits()
                );
            }
        }
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8)), 1.0, "tie to even");
        assert_eq!(round_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6), "tie to even, upward");
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 1.0 + 2f32.powi(-7));
        assert_eq!(round_to_dtype(1.0 + 2f32.powi(-8), Dtype::F32), 1.0 + 2f32.powi(-8));
        assert_eq!(round_to_dtype(1.0 + 2f32.powi(-12), Dtype::F16), 1.0);
        // torch: bf16(300) / f32(0.7) computes 300/0.7 = 428.57 in f32, then rounds to bf16 428.
        assert_eq!(round_to_bf16(300.0 / 0.7), 428.0);
    }
}
