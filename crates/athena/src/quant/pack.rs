//! Bit packing of MLX's affine format.
//!
//! MLX stores the `bits`-wide codes of a row as one little-endian bit stream cut into u32
//! words: code `i` occupies stream bits `[i * bits, (i + 1) * bits)`, and stream bit `j` is bit
//! `j % 32` of word `j / 32`. For 2, 4 and 8 bits a word holds 32 / bits whole codes (code 0 in
//! the lowest bits). For 3, 5 and 6 bits codes straddle words: MLX writes them as packs of
//! 8 codes in 3 bytes (3 bits), 8 codes in 5 bytes (5 bits) or 4 codes in 3 bytes (6 bits),
//! each pack little-endian, which read back as u32 words is the same continuous stream
//! (`mlx/backend/cpu/quantized.cpp`, `quantize` and `extract_bits`).
//!
//! A group of 32, 64 or 128 codes fills exactly `group_size * bits / 32` words, so groups never
//! share a word and each can be unpacked on its own.

/// Packs `codes` (each below `2^bits`) into `words` as one little-endian bit stream.
///
/// `codes.len() * bits` must equal `words.len() * 32`; the callers in this module guarantee
/// it. Surplus codes or words are left alone rather than read out of bounds.
pub(crate) fn pack(bits: u8, codes: &[u8], words: &mut [u32]) {
    let bits = u32::from(bits);
    let mask = (1u64 << bits) - 1;
    let mut acc = 0u64;
    let mut filled = 0u32;
    let mut out = words.iter_mut();
    for &code in codes {
        acc |= (u64::from(code) & mask) << filled;
        filled += bits;
        if filled >= 32 {
            if let Some(word) = out.next() {
                *word = acc as u32;
            }
            acc >>= 32;
            filled -= 32;
        }
    }
    if filled > 0 {
        if let Some(word) = out.next() {
            *word = acc as u32;
        }
    }
}

/// Unpacks the codes of `words` into `out` as f32 values, `out.len()` codes in all.
///
/// `bits` must be one of 2, 3, 4, 5, 6, 8 (validated by [`super::AffineParams`]); for any
/// other value `out` is left unchanged. `out.len()` must be a multiple of 32.
#[inline]
pub(crate) fn unpack(bits: u8, words: &[u32], out: &mut [f32]) {
    match bits {
        2 => unpack_aligned::<2>(words, out),
        3 => unpack_straddling::<3, 3, 32>(words, out),
        4 => unpack_aligned::<4>(words, out),
        5 => unpack_straddling::<5, 5, 32>(words, out),
        6 => unpack_straddling::<6, 3, 16>(words, out),
        8 => unpack_aligned::<8>(words, out),
        _ => {}
    }
}

/// 2, 4 and 8 bits: every word holds `32 / BITS` whole codes.
#[inline]
fn unpack_aligned<const BITS: u32>(words: &[u32], out: &mut [f32]) {
    let per_word = (32 / BITS) as usize;
    let mask = (1u32 << BITS) - 1;
    for (&word, codes) in words.iter().zip(out.chunks_exact_mut(per_word)) {
        for (k, code) in codes.iter_mut().enumerate() {
            *code = ((word >> (k as u32 * BITS)) & mask) as f32;
        }
    }
}

/// 3, 5 and 6 bits: `WORDS` words hold `CODES` codes exactly, some of them split across two
/// words. Each code is read from the 64-bit window over its word and the next one; the
/// constant offsets let the compiler unroll a block into plain shifts and masks.
#[inline]
fn unpack_straddling<const BITS: usize, const WORDS: usize, const CODES: usize>(
    words: &[u32],
    out: &mut [f32],
) {
    let mask = (1u64 << BITS) - 1;
    for (block, codes) in words.chunks_exact(WORDS).zip(out.chunks_exact_mut(CODES)) {
        let Ok(block) = <&[u32; WORDS]>::try_from(block) else {
            continue;
        };
        let Ok(codes) = <&mut [f32; CODES]>::try_from(codes) else {
            continue;
        };
        for (i, code) in codes.iter_mut().enumerate() {
            let (word, shift) = (i * BITS / 32, i * BITS % 32);
            let lo = u64::from(block[word]);
            let hi = if word + 1 < WORDS {
                u64::from(block[word + 1])
            } else {
                0
            };
            *code = (((hi << 32 | lo) >> shift) & mask) as f32;
        }
    }
}
