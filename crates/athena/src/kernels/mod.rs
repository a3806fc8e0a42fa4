//! CPU kernels for the weight-bound products of decoding and prefill: dot products of f32
//! activations with f32, bf16 or affine-quantized (4- and 8-bit) weight rows, and the row-wise
//! matrix product [`matmul`] built on them.
//!
//! Each kernel has an AVX2+FMA version, chosen at run time with `is_x86_feature_detected!`,
//! and a portable one; the tests hold both to a plain reference. Dot products keep eight-lane
//! f32 partial sums and fold them into an f64 total every [`FLUSH`](layout::FLUSH) elements, so a long row
//! is summed as accurately as a short one.
//!
//! bf16 rows also have AVX-512 kernels, chosen the same way: the widening [`bf16_to_f32`]
//! and, when every input value is a bf16 (a model run in bf16: its activations are bf16
//! tensors widened to f32), [`matmul`]'s products of two or more input rows on AVX512_BF16's
//! `vdpbf16ps` (`bf16_pairs`): bf16 products are exact in f32, so those outputs differ from
//! [`matmul_exact`]'s in summation order only (f32 partial sums over sixteen lanes, without
//! the f64 folding).
//!
//! [`matmul`] computes `y = x · Wᵀ` one weight row at a time: a row is converted to f32 once
//! (dequantized or widened from bf16) into a buffer that stays in L1, then dotted with up to
//! four input rows at once; input rows are taken in tiles that stay in L2 while the row blocks
//! stream past, and row blocks run in parallel on the kernels' own [`pool`] (the calling
//! thread takes part, and idle workers spin briefly, so that the next product starts without
//! a wake-up). At one input row (decode) bf16 and f32 rows skip the buffer and are read
//! straight from the weights.
//!
//! [`matmul`] also hands 4- and 8-bit affine rows the inputs' int16 form ([`affine`]) at
//! every number of input rows (other rows up to [`GEMV_MAX_ROWS`]): they run integer dot
//! products instead of dequantizing, each row's codes unpacked once for up to
//! [`layout::INPUTS_PER_PASS`] inputs, on AVX-512 VNNI where the CPU has it; [`matmul_exact`]
//! keeps f32 activations throughout (the accuracy contract of
//! [`crate::quant::QMatrix::matmul`]).
//!
//! [`matmul_many`] runs several decode-sized products (a step's routed experts) in one
//! parallel pass, each output equal to [`matmul`]'s. Against one input, 4- and 8-bit rows in
//! groups of 64 run a task's whole range in one call ([`decode`]), their scales and biases
//! read as stored (f32, bf16 or f16).
//!
//! The files import one way, as ggml-cpu's do (`ggml-common.h`, `arch/x86/`, `quants.c`):
//! - [`layout`] and `cpu` are leaves: block sizes, the prepared input forms, their code order,
//!   stored group values, panels and the bias term's order; which extensions this CPU has.
//! - `x86/` (one file per extension) and `portable` are the kernels: they import `layout`
//!   only (`x86/avx512_int8` also the shared parts of `x86/avx512`).
//! - The dispatchers check the CPU and the lengths, then call a kernel: `float` (f32 and bf16
//!   vectors), `widen`, [`affine`] and [`affine8`] (one weight row against prepared inputs),
//!   [`decode`], [`panel`] and `bf16_pairs`.
//! - `matrix` ([`WeightMatrix`]), `matmul` and `grouped` ([`matmul_many`]) sit on top, with
//!   [`pool`] beside them; [`attention`] and [`bandwidth`] use `float` and `pool`. This file
//!   only declares the modules and re-exports their public items.
//!
//! The unit tests of `x.rs` live beside it in `x_tests.rs`, declared at the end of this file;
//! `tests.rs` holds those of the re-exported products as a whole.

pub mod affine;
pub mod affine8;
pub mod attention;
pub mod bandwidth;
#[cfg(target_arch = "x86_64")]
mod bf16_pairs;
mod cpu;
pub mod decode;
mod float;
mod grouped;
pub mod layout;
mod matmul;
mod matrix;
pub mod panel;
pub mod pool;
mod portable;
mod widen;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use cpu::{has_avx2_fma, has_avx512, has_avx512_bf16, has_avx512_vnni, isa, InstructionSet};
pub use float::{
    axpy, bf16_to_f32, dequantize_group, dot, dot2x4, dot4, dot_bf16, dot_bf16_wide, round_bf16,
};
pub use grouped::{matmul_many, Product};
pub use layout::{GroupValues, InputForm};
pub use matmul::{matmul, matmul_exact, GEMV_MAX_ROWS};
pub use matrix::{Bf16Rows, F32Rows, WeightMatrix};
pub use widen::{widen_bf16, widen_f16};

#[cfg(test)]
mod affine8_tests;
#[cfg(test)]
mod affine_tests;
#[cfg(test)]
mod attention_tests;
#[cfg(all(test, target_arch = "x86_64"))]
mod bf16_tests;
#[cfg(test)]
mod grouped_tests;
#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod widen_tests;
