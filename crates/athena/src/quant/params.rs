//! [`AffineParams`]: the bit width and group size of MLX's affine quantization.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The parameters of MLX's affine quantization, as in mlx-lm's
/// `"quantization": {"group_size": 64, "bits": 4}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawAffineParams")]
pub struct AffineParams {
    /// Bits per weight: 2, 3, 4, 5, 6 or 8.
    pub bits: u8,
    /// Consecutive weights of a row that share one scale and bias: 32, 64 or 128.
    pub group_size: usize,
}

/// [`AffineParams`] as written, before validation.
#[derive(Deserialize)]
struct RawAffineParams {
    bits: u8,
    group_size: usize,
}

impl TryFrom<RawAffineParams> for AffineParams {
    type Error = Error;
    fn try_from(raw: RawAffineParams) -> Result<Self> {
        AffineParams::new(raw.bits, raw.group_size)
    }
}

impl AffineParams {
    /// The bit widths MLX's affine mode supports.
    pub const BITS: [u8; 6] = [2, 3, 4, 5, 6, 8];
    /// The group sizes MLX's affine mode supports.
    pub const GROUP_SIZES: [usize; 3] = [32, 64, 128];

    /// These parameters for a matrix of `cols` columns, or the same bits with a smaller group
    /// size (64, then 32) when `cols` needs it; `None` when no supported group size divides it.
    pub fn fitting(self, cols: usize) -> Option<AffineParams> {
        [self.group_size, 64, 32]
            .into_iter()
            .filter(|&g| g <= self.group_size && g > 0)
            .find(|&g| cols.is_multiple_of(g))
            .and_then(|g| AffineParams::new(self.bits, g).ok())
    }

    /// Validated parameters: `bits` ∈ {2, 3, 4, 5, 6, 8}, `group_size` ∈ {32, 64, 128}.
    pub fn new(bits: u8, group_size: usize) -> Result<Self> {
        if !Self::BITS.contains(&bits) {
            return Err(Error::invalid(
                "bits",
                format!(
                    "{bits} is not supported by MLX's affine quantization (2, 3, 4, 5, 6 or 8)"
                ),
            ));
        }
        if !Self::GROUP_SIZES.contains(&group_size) {
            return Err(Error::invalid(
                "group_size",
                format!(
                    "{group_size} is not supported by MLX's affine quantization (32, 64 or 128)"
                ),
            ));
        }
        Ok(AffineParams { bits, group_size })
    }

    /// Checks parameters that may have been built field by field.
    pub(super) fn check(self) -> Result<Self> {
        AffineParams::new(self.bits, self.group_size)
    }

    /// The number of u32 words that hold one row of `cols` weights (`cols * bits / 32`);
    /// `cols` must be a positive multiple of `group_size`.
    pub fn packed_cols(&self, cols: usize) -> Result<usize> {
        self.check()?;
        if cols == 0 || !cols.is_multiple_of(self.group_size) {
            return Err(Error::invalid(
                "group_size",
                format!(
                    "{cols} columns are not a positive multiple of the group size {}",
                    self.group_size
                ),
            ));
        }
        // group_size is a multiple of 32, so the division is exact.
        Ok(cols / 32 * usize::from(self.bits))
    }

    /// Words per group: `group_size * bits / 32`.
    pub(super) fn group_words(self) -> usize {
        self.group_size / 32 * usize::from(self.bits)
    }

    /// The largest code, `2^bits - 1`.
    pub(super) fn max_code(self) -> f32 {
        ((1u32 << self.bits) - 1) as f32
    }
}
