//! MXFP4 (OCP microscaling FP4) as GPT-OSS stores its experts: E2M1 codes (sign in bit 3, two per byte, the
//! even-indexed element in the low nibble) in blocks of 32 that share one E8M0 exponent byte, worth
//! `2^(byte - 127)`.
//!
//! Decoding follows transformers' `convert_moe_packed_tensors`: the E2M1 value (a lookup table holding -0.0 for
//! code 8) is scaled with `torch.ldexp`, which is exact and rounds once to the parameter's dtype. So a scale byte
//! of 255 gives 2^128 times the code: infinity for |code| >= 1, 2^127 for 0.5, and a signed zero for zero (not
//! NaN, as a multiplication by an infinite scale would give).
//!
//! FP8 checkpoints with `scale_fmt: "ue8m0"` may store their `weight_scale_inv` as E8M0 bytes too; transformers
//! turns those into the f32 `exp2(byte - 127)` before multiplying (255 is +infinity there).

use super::e2m1::e2m1_to_f32;

/// Values sharing one E8M0 scale.
pub const MXFP4_BLOCK: usize = 32;
/// Bytes holding one block's codes.
pub const MXFP4_BLOCK_BYTES: usize = MXFP4_BLOCK / 2;
/// The bias of an E8M0 exponent byte.
pub const E8M0_BIAS: i32 = 127;

/// `code`'s E2M1 value times `2^(scale - 127)`, exactly as `torch.ldexp` gives it in f32: exact, or ±infinity
/// past f32's range (every product has at most two significant bits, so it is also exact in bf16 and rounds
/// only in f16).
#[inline]
pub fn mxfp4_value(code: u8, scale: u8) -> f32 {
    // Exact in f64; the conversion to f32 only overflows (the smallest product, 2^-128, is an f32 subnormal).
    (f64::from(e2m1_to_f32(code)) * 2f64.powi(i32::from(scale) - E8M0_BIAS)) as f32
}

/// An E8M0 byte as the f32 scale `exp2(byte - 127)` (255 is +infinity, 0 the subnormal 2^-127).
#[inline]
pub fn e8m0_to_f32(byte: u8) -> f32 {
    if byte == 0 {
        // 2^-127 is the subnormal with only the top mantissa bit set.
        f32::from_bits(0x0040_0000)
    } else {
        // The byte is the f32 exponent field itself; 255 there is infinity.
        f32::from_bits(u32::from(byte) << 23)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_scale_by_powers_of_two() {
        assert_eq!(mxfp4_value(0x2, 127), 1.0);
        assert_eq!(mxfp4_value(0x7, 128), 12.0);
        assert_eq!(mxfp4_value(0xF, 126), -3.0);
        // 2^-128, the subnormal with mantissa bit 21 set (2f32.powi(-128) underflows to 0 without optimisation).
        assert_eq!(mxfp4_value(0x1, 0), f32::from_bits(0x0020_0000));
        assert!(mxfp4_value(0x8, 140).is_sign_negative() && mxfp4_value(0x8, 140) == 0.0);
    }

    #[test]
    fn the_largest_scale_overflows_like_ldexp() {
        assert_eq!(mxfp4_value(0x0, 255), 0.0);
        assert!(mxfp4_value(0x8, 255).is_sign_negative());
        assert_eq!(mxfp4_value(0x1, 255), 2f32.powi(127));
        assert_eq!(mxfp4_value(0x2, 255), f32::INFINITY);
        assert_eq!(mxfp4_value(0xA, 255), f32::NEG_INFINITY);
        assert_eq!(mxfp4_value(0x7, 254), f32::INFINITY, "6 * 2^127 is past f32's range");
        assert_eq!(mxfp4_value(0x3, 254), 1.5 * 2f32.powi(127));
        assert_eq!(mxfp4_value(0x5, 254), f32::INFINITY, "3 * 2^127 too");
    }

    #[test]
    fn e8m0_bytes_are_powers_of_two() {
        assert_eq!(e8m0_to_f32(127), 1.0);
        assert_eq!(e8m0_to_f32(130), 8.0);
        assert_eq!(e8m0_to_f32(1), 2f32.powi(-126));
        assert_eq!(e8m0_to_f32(0), 2f32.powi(-127));
        assert_eq!(e8m0_to_f32(254), 2f32.powi(127));
        assert_eq!(e8m0_to_f32(255), f32::INFINITY);
    }
}
