//! Tests of the bit packing of MLX affine codes.

use super::pack::{pack, unpack};

const ALL_BITS: [u8; 6] = [2, 3, 4, 5, 6, 8];

/// Reads code `i` bit by bit from the stream definition, independently of `unpack`.
fn code_at(words: &[u32], bits: u8, i: usize) -> u32 {
    (0..usize::from(bits))
        .map(|b| {
            let j = i * usize::from(bits) + b;
            ((words[j / 32] >> (j % 32)) & 1) << b
        })
        .sum()
}

fn codes(bits: u8, n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % (1u64 << bits)) as u8
        })
        .collect()
}

#[test]
fn pack_unpack_round_trip_every_bits() {
    for bits in ALL_BITS {
        for n in [32usize, 64, 128, 256] {
            let codes = codes(bits, n, u64::from(bits) * 1000 + n as u64);
            let mut words = vec![0u32; n * usize::from(bits) / 32];
            pack(bits, &codes, &mut words);
            for (i, &c) in codes.iter().enumerate() {
                assert_eq!(
                    code_at(&words, bits, i),
                    u32::from(c),
                    "bits {bits} code {i}"
                );
            }
            let mut out = vec![-1.0f32; n];
            unpack(bits, &words, &mut out);
            let back: Vec<u8> = out.iter().map(|&v| v as u8).collect();
            assert_eq!(back, codes, "bits {bits} n {n}");
        }
    }
}

#[test]
fn extreme_codes_round_trip() {
    for bits in ALL_BITS {
        let max = ((1u16 << bits) - 1) as u8;
        let codes: Vec<u8> = (0..64).map(|i| if i % 3 == 0 { max } else { 0 }).collect();
        let mut words = vec![0u32; 64 * usize::from(bits) / 32];
        pack(bits, &codes, &mut words);
        let mut out = vec![0.0f32; 64];
        unpack(bits, &words, &mut out);
        assert!(
            out.iter().zip(&codes).all(|(&o, &c)| o == f32::from(c)),
            "bits {bits}"
        );
    }
}

#[test]
fn four_bit_layout_is_low_nibble_first() {
    let codes: Vec<u8> = (0..32).map(|i| (i % 16) as u8).collect();
    let mut words = [0u32; 4];
    pack(4, &codes, &mut words);
    assert_eq!(words[0], 0x7654_3210);
    assert_eq!(words[1], 0xfedc_ba98);
}

#[test]
fn three_bit_codes_straddle_words() {
    // Code 10 occupies stream bits 30..33: two bits in word 0, one in word 1.
    let mut codes = vec![0u8; 32];
    codes[10] = 0b101;
    let mut words = [0u32; 3];
    pack(3, &codes, &mut words);
    assert_eq!(words, [0b01 << 30, 0b1, 0]);
}
