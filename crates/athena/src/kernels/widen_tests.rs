//! Tests of the bulk bf16 and f16 widening against `half`.

use half::{bf16, f16};

use super::widen::*;

/// Every 16-bit pattern, at lengths that leave each possible remainder after the
/// sixteen-wide steps.
#[test]
fn widening_matches_half_on_every_bit_pattern() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    for len in [all.len(), 65_519, 17, 15, 1, 0] {
        let bits = &all[all.len() - len..];
        let b: Vec<bf16> = bits.iter().map(|&x| bf16::from_bits(x)).collect();
        let h: Vec<f16> = bits.iter().map(|&x| f16::from_bits(x)).collect();
        let mut out = vec![0f32; len];
        widen_bf16(&b, &mut out);
        for (v, o) in b.iter().zip(&out) {
            match v.is_nan() {
                true => assert!(o.is_nan(), "bf16 {:#06x}", v.to_bits()),
                false => assert_eq!(o.to_bits(), v.to_f32().to_bits(), "{:#06x}", v.to_bits()),
            }
        }
        widen_f16(&h, &mut out);
        for (v, o) in h.iter().zip(&out) {
            match v.is_nan() {
                true => assert!(o.is_nan(), "f16 {:#06x}", v.to_bits()),
                false => assert_eq!(o.to_bits(), v.to_f32().to_bits(), "{:#06x}", v.to_bits()),
            }
        }
    }
}

#[test]
fn widening_stops_at_the_shorter_slice() {
    let src = vec![bf16::from_f32(2.0); 40];
    let mut dst = vec![-1f32; 20];
    widen_bf16(&src, &mut dst);
    assert!(dst.iter().all(|&v| v == 2.0));
    let mut long = vec![-1f32; 50];
    widen_bf16(&src, &mut long);
    assert!(long[..40].iter().all(|&v| v == 2.0) && long[40..].iter().all(|&v| v == -1.0));
}
