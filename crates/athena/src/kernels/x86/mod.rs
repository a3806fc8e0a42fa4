//! The x86-64 kernels, one file per instruction-set extension. Each function requires the
//! extensions its `#[target_feature]` names; the dispatchers in [`crate::kernels`] check them
//! at run time and pass slices of the lengths each function names. These files import only
//! [`crate::kernels::layout`] (and `avx512_int8` the shared parts of `avx512`).

pub(super) mod avx2;
pub(super) mod avx512;
pub(super) mod avx512_float;
pub(super) mod avx512_int8;
pub(super) mod avx512_panel;
pub(super) mod widen;
