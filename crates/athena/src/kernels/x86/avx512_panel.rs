//! AVX-512 VNNI kernels of [`crate::kernels::panel`]: a weight row unpacked to signed bytes, and rows
//! against a panel of sixteen inputs. Every function here requires AVX-512 F, BW and VNNI;
//! the callers in [`crate::kernels::panel`] check that and the lengths.

use std::arch::x86_64::*;

use crate::kernels::layout::{
    pair_offset, quad_offset, steps_per_block, InputForm, Panel, WeightRows, PANEL, SPAN_LEN,
};

/// The row `words` of `bits` bits as signed bytes in the panel's column order (`codes`,
/// `cols` long) and 128 · each block's code sum (`sums`, `cols / 32` long).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn unpack(bits: u8, words: &[u32], codes: &mut [u8], sums: &mut [i32]) {
    let src = words.as_ptr().cast::<u8>();
    let dst = codes.as_mut_ptr();
    let zero = _mm512_setzero_si512();
    let mut q = [0u64; 8];
    if bits == 8 {
        // 64 codes (two blocks) a step: less 128 is the top bit flipped.
        let flip = _mm512_set1_epi8(-128);
        for c in 0..codes.len() / 64 {
            let v = _mm512_loadu_si512(src.add(64 * c).cast());
            _mm512_storeu_si512(dst.add(64 * c).cast(), _mm512_xor_si512(v, flip));
            _mm512_storeu_si512(q.as_mut_ptr().cast(), _mm512_sad_epu8(v, zero));
            for k in 0..2 {
                let total = (q[4 * k] + q[4 * k + 1] + q[4 * k + 2] + q[4 * k + 3]) as i32;
                sums[2 * c + k] = 128 * (total - 128 * 32);
            }
        }
    } else {
        // 64 bytes (128 codes, four blocks) a step: the low nibbles, then the high ones.
        let mask = _mm512_set1_epi8(0x0f);
        for c in 0..codes.len() / 128 {
            let v = _mm512_loadu_si512(src.add(64 * c).cast());
            let lo = _mm512_and_si512(v, mask);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask);
            _mm512_storeu_si512(dst.add(128 * c).cast(), lo);
            _mm512_storeu_si512(dst.add(128 * c + 64).cast(), hi);
            let s = _mm512_add_epi64(_mm512_sad_epu8(lo, zero), _mm512_sad_epu8(hi, zero));
            _mm512_storeu_si512(q.as_mut_ptr().cast(), s);
            for k in 0..4 {
                sums[4 * c + k] = 128 * (q[2 * k] + q[2 * k + 1]) as i32;
            }
        }
    }
}

/// The row `words` of `bits` bits as int16 codes in the int16 form's order (`codes`,
/// `2 · cols` bytes): per span of 64 values, the even columns, then the odd ones.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn unpack_int16(bits: u8, words: &[u32], codes: &mut [u8]) {
    let src = words.as_ptr().cast::<u8>();
    let dst = codes.as_mut_ptr();
    let spans = codes.len() / (2 * SPAN_LEN);
    for s in 0..spans {
        let (even, odd) = if bits == 8 {
            let v = _mm512_loadu_si512(src.add(SPAN_LEN * s).cast());
            (
                _mm512_and_si512(v, _mm512_set1_epi16(0xff)),
                _mm512_srli_epi16::<8>(v),
            )
        } else {
            let v = _mm512_cvtepu8_epi16(_mm256_loadu_si256(src.add(SPAN_LEN / 2 * s).cast()));
            (
                _mm512_and_si512(v, _mm512_set1_epi16(0x0f)),
                _mm512_srli_epi16::<4>(v),
            )
        };
        _mm512_storeu_si512(dst.add(2 * SPAN_LEN * s).cast(), even);
        _mm512_storeu_si512(dst.add(2 * SPAN_LEN * s + 64).cast(), odd);
    }
}

/// `Σ w_r·x_k` for `R` unpacked rows and every input lane of `panel` (lanes past its inputs
/// hold zeros).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dots<const R: usize>(
    bits: u8,
    group_size: usize,
    w: WeightRows<'_, R>,
    panel: &Panel,
) -> [[f32; PANEL]; R] {
    macro_rules! go {
        ($wide:literal, $bits:literal) => {
            match group_size {
                32 => run::<$wide, $bits, 1, R>(w, panel),
                64 => run::<$wide, $bits, 2, R>(w, panel),
                _ => run::<$wide, $bits, 4, R>(w, panel),
            }
        };
    }
    match (panel.form, bits) {
        (InputForm::Int16, 8) => go!(true, 8),
        (InputForm::Int16, _) => go!(true, 4),
        (InputForm::Int8, 8) => go!(false, 8),
        (InputForm::Int8, _) => go!(false, 4),
    }
}

/// `acc + Σ x·w` per int32 lane with one VNNI instruction, the dword at `w` broadcast to
/// every lane, written out so that the broadcast stays in the instruction: the compiler would
/// otherwise hoist every broadcast of a block into registers and spill.
macro_rules! broadcast_dot {
    ($(#[$doc:meta])* $name:ident, $insn:literal) => {
        $(#[$doc])*
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        unsafe fn $name(acc: __m512i, x: __m512i, w: *const u8) -> __m512i {
            let mut acc = acc;
            std::arch::asm!(
                concat!($insn, " {acc}, {x}, dword ptr [{w}]{{1to16}}"),
                acc = inout(zmm_reg) acc,
                x = in(zmm_reg) x,
                w = in(reg) w,
                options(pure, readonly, nostack, preserves_flags),
            );
            acc
        }
    };
}

broadcast_dot!(
    /// `vpdpbusd`: `x` unsigned bytes, the four signed bytes at `w`.
    dpbusd_broadcast,
    "vpdpbusd"
);
broadcast_dot!(
    /// `vpdpwssd`: `x` int16 pairs, the two int16 values at `w`.
    dpwssd_broadcast,
    "vpdpwssd"
);

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn run<const WIDE: bool, const BITS: u8, const BPG: usize, const R: usize>(
    weights: WeightRows<'_, R>,
    panel: &Panel,
) -> [[f32; PANEL]; R] {
    let blocks = panel.steps.len() / PANEL;
    let w = weights.rows.map(|r| r.codes.as_ptr());
    let ws = weights.rows.map(|r| r.sums.as_ptr());
    let (ps, pb) = (
        weights.scales.map(<[f32]>::as_ptr),
        weights.biases.map(<[f32]>::as_ptr),
    );
    let x = panel.codes.as_ptr();
    let (steps, start, sums) = (
        panel.steps.as_ptr(),
        panel.start.as_ptr(),
        panel.sums.as_ptr(),
    );
    let mut acc = [_mm512_setzero_ps(); R];
    let per_block = steps_per_block(if WIDE {
        InputForm::Int16
    } else {
        InputForm::Int8
    });
    for b in 0..blocks {
        let mut dot = [_mm512_setzero_si512(); R];
        if !WIDE {
            let from = _mm512_loadu_si512(start.add(PANEL * b).cast());
            for r in 0..R {
                dot[r] = _mm512_sub_epi32(from, _mm512_set1_epi32(*ws[r].add(b)));
            }
        }
        for j in 0..per_block {
            let xv = _mm512_loadu_si512(x.add(64 * (per_block * b + j)).cast());
            if WIDE {
                let at = pair_offset(b, j);
                for r in 0..R {
                    dot[r] = dpwssd_broadcast(dot[r], xv, w[r].add(at));
                }
            } else {
                let at = quad_offset(BITS, b, j);
                for r in 0..R {
                    dot[r] = dpbusd_broadcast(dot[r], xv, w[r].add(at));
                }
            }
        }
        let st = _mm512_loadu_ps(steps.add(PANEL * b));
        let g = b / BPG;
        for r in 0..R {
            let t = _mm512_mul_ps(_mm512_cvtepi32_ps(dot[r]), st);
            acc[r] = _mm512_fmadd_ps(t, _mm512_set1_ps(*ps[r].add(g)), acc[r]);
        }
        if (b + 1) % BPG == 0 {
            let xs = _mm512_loadu_ps(sums.add(PANEL * g));
            for r in 0..R {
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(*pb[r].add(g)), xs, acc[r]);
            }
        }
    }
    let mut out = [[0f32; PANEL]; R];
    for r in 0..R {
        _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
    }
    out
}
