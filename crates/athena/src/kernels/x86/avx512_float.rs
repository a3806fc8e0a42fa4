//! AVX-512 versions of the bf16 float kernels. Every function here requires a CPU with
//! AVX-512 F, BW and VL, and the bf16 × bf16 products ([`dot_pairs`]) also AVX512_BF16; the
//! dispatchers in [`crate::kernels`] check that at run time and pass slices of the lengths each function
//! names.

use std::arch::x86_64::*;

use half::bf16;

/// Sixteen bf16 values at `p` widened to f32 (a bf16 is the high half of an f32).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load_bf16(p: *const bf16) -> __m512 {
    let h = _mm256_loadu_si256(p.cast::<__m256i>());
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
}

/// The first `len` (< 16) bf16 values at `p` widened to f32, the other lanes zero; reads
/// only those `len` values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load_bf16_part(p: *const bf16, len: usize) -> __m512 {
    let h = _mm256_maskz_loadu_epi16(low_mask16(len), p.cast::<i16>());
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
}

/// A mask with the low `len` (≤ 16) bits set.
#[inline]
fn low_mask16(len: usize) -> __mmask16 {
    (((1u32 << len) - 1) & 0xffff) as __mmask16
}

/// A mask with the low `len` (≤ 32) bits set.
#[inline]
fn low_mask32(len: usize) -> __mmask32 {
    ((1u64 << len) - 1) as __mmask32
}

/// bf16 → f32 (exact); `src.len() == out.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn bf16_to_f32(src: &[bf16], out: &mut [f32]) {
    let n = src.len();
    let (ps, po) = (src.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        _mm512_storeu_ps(po.add(i), load_bf16(ps.add(i)));
        i += 16;
    }
    if i < n {
        let len = n - i;
        _mm512_mask_storeu_ps(po.add(i), low_mask16(len), load_bf16_part(ps.add(i), len));
    }
}

/// Writes the bf16 form of `src` into `out` (`src.len() == out.len()`) and returns whether it
/// is exact, that is whether every value's low 16 bits are zero (`out` then holds the
/// values themselves; otherwise it holds them truncated).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn pack_bf16(src: &[f32], out: &mut [bf16]) -> bool {
    let n = src.len();
    let (ps, po) = (src.as_ptr().cast::<i32>(), out.as_mut_ptr());
    let mut low = _mm512_setzero_si512();
    let mut i = 0;
    while i + 16 <= n {
        let v = _mm512_loadu_si512(ps.add(i).cast::<__m512i>());
        low = _mm512_or_si512(low, v);
        let hi = _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(v));
        _mm256_storeu_si256(po.add(i).cast::<__m256i>(), hi);
        i += 16;
    }
    let mut exact = _mm512_test_epi32_mask(low, _mm512_set1_epi32(0xffff)) == 0;
    while i < n {
        let bits = (*ps.add(i)) as u32;
        exact &= bits & 0xffff == 0;
        *po.add(i) = bf16::from_bits((bits >> 16) as u16);
        i += 1;
    }
    exact
}

/// 32 bf16 values (16 pairs) at `p`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn load_pairs(p: *const bf16) -> __m512bh {
    // SAFETY (of the transmute): both types are 512 bits of plain data.
    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.cast::<__m512i>()))
}

/// 32 bf16 zeros.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn zero_pairs() -> __m512bh {
    std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512())
}

/// The first `len` (< 32) bf16 values at `p`, the other lanes zero; reads only those values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn load_pairs_part(p: *const bf16, len: usize) -> __m512bh {
    let v = _mm512_maskz_loadu_epi16(low_mask32(len), p.cast::<i16>());
    std::mem::transmute::<__m512i, __m512bh>(v)
}

/// `out[j][k] = Σ w_j·x_k` over `n` values for `R` bf16 rows `w` and `C` bf16 rows `x`, each
/// pointer valid for `n` reads. `vdpbf16ps` multiplies pairs of bf16 values exactly and adds
/// them into sixteen f32 lanes per pair of rows (`R·C` accumulators, each row value loaded
/// once per step for all of them); subnormal inputs and partial sums count as zero, as the
/// instruction defines. Each output is the exact sum up to f32 rounding over `n / 16 + 4`
/// additions a lane.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(crate) unsafe fn dot_pairs<const R: usize, const C: usize>(
    w: [*const bf16; R],
    x: [*const bf16; C],
    n: usize,
) -> [[f32; C]; R] {
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let mut wv = [zero_pairs(); R];
    let mut i = 0;
    while i + 32 <= n {
        for j in 0..R {
            wv[j] = load_pairs(w[j].add(i));
        }
        for k in 0..C {
            let xv = load_pairs(x[k].add(i));
            for j in 0..R {
                acc[j][k] = _mm512_dpbf16_ps(acc[j][k], wv[j], xv);
            }
        }
        i += 32;
    }
    if i < n {
        let len = n - i;
        for j in 0..R {
            wv[j] = load_pairs_part(w[j].add(i), len);
        }
        for k in 0..C {
            let xv = load_pairs_part(x[k].add(i), len);
            for j in 0..R {
                acc[j][k] = _mm512_dpbf16_ps(acc[j][k], wv[j], xv);
            }
        }
    }
    let mut out = [[0f32; C]; R];
    for j in 0..R {
        for k in 0..C {
            out[j][k] = _mm512_reduce_add_ps(acc[j][k]);
        }
    }
    out
}
