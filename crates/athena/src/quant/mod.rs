//! Quantized weights: MLX's affine format and its CPU kernels.
//!
//! [`QMatrix`] holds a [rows, cols] weight in the layout mlx-lm checkpoints use (`weight` u32
//! packed codes, `scales` and `biases` per group of columns, `w = scale * q + bias`). It is
//! read from such a checkpoint with [`QMatrix::from_mlx`], made from f32 weights at load time
//! with [`QMatrix::quantize`] (bit-identical to `mx.quantize`), written back with
//! [`QMatrix::to_mlx`], and applied with [`QMatrix::matmul`] without ever dequantizing the
//! whole matrix. `fixtures/quant/` holds MLX's own outputs for the parity tests.
//!
//! One job a file: [`AffineParams`] in `params`, the [`QMatrix`] type and its products in
//! `qmatrix`, making one in `quantize` and `mlx_io`, reading it back in `dequantize`, its
//! scales' dtype in `scale_dtype` (stored through `scalars`), the code packing in `pack` and
//! the products' kernel glue in `matmul`. The unit tests of `x.rs` live beside it in
//! `x_tests.rs`.

mod dequantize;
mod matmul;
mod mlx_io;
mod pack;
mod params;
mod qmatrix;
mod quantize;
mod scalars;
mod scale_dtype;

pub use params::AffineParams;
pub use qmatrix::{InputForm, QMatrix};

#[cfg(test)]
mod pack_tests;
#[cfg(test)]
mod qmatrix_tests;
