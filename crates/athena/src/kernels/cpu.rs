//! What this CPU runs: the instruction-set extensions the kernels are chosen by, checked at
//! run time with `is_x86_feature_detected!` (once, then cached by std).

/// Whether the AVX2+FMA kernels can run on this CPU.
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX-512 float kernels can run on this CPU: AVX-512 F, BW and VL.
#[inline]
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the bf16 × bf16 kernels can run: [`has_avx512`] and AVX512_BF16 (`vdpbf16ps`).
#[inline]
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx512() && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX-512 integer kernels (F, BW and VNNI) can run on this CPU.
#[inline]
pub fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The instruction set the kernels use on this machine, for reports.
pub fn isa() -> &'static str {
    if has_avx512_bf16() && has_avx2_fma() {
        "avx512+bf16"
    } else if has_avx512() && has_avx2_fma() {
        "avx512"
    } else if has_avx2_fma() {
        "avx2+fma"
    } else {
        "portable"
    }
}

/// The instruction sets the integer kernels of quantized rows (`affine`) are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstructionSet {
    /// AVX-512 F, BW and VNNI: two blocks a step.
    Avx512Vnni,
    /// AVX2 and FMA: one block a step.
    Avx2Fma,
    /// Plain integer arithmetic.
    Portable,
}

impl InstructionSet {
    /// The fastest one this CPU runs.
    pub fn best() -> InstructionSet {
        if has_avx512_vnni() {
            InstructionSet::Avx512Vnni
        } else if has_avx2_fma() {
            InstructionSet::Avx2Fma
        } else {
            InstructionSet::Portable
        }
    }

    /// Whether this CPU runs it.
    pub fn available(self) -> bool {
        match self {
            InstructionSet::Avx512Vnni => has_avx512_vnni(),
            InstructionSet::Avx2Fma => has_avx2_fma(),
            InstructionSet::Portable => true,
        }
    }
}
