//! The one table of the head's parameters: their names (in the [`VarMap`](candle_nn::VarMap)
//! and on disk), their shapes and the fan-in that sets their initial range. The candle
//! forward pass, the hand-written training pass, initialisation, saving and loading all
//! read it from here.

use crate::error::{Error, Result};

/// The widths that fix the parameters' shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadDims {
    /// Width `D` of the hidden states the head reads.
    pub input: usize,
    /// Width `d` of the shared projection.
    pub proj: usize,
    /// Number of operations `n`.
    pub ops: usize,
}

/// One of the head's parameters (see the [module documentation](super) for where each
/// enters the architecture).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Param {
    /// `P`, `[d, D]`.
    ProjWeight,
    /// `p`, `[d]`.
    ProjBias,
    /// `W_op`, `[n, 3d]`.
    OpWeight,
    /// `b_op`, `[n]`.
    OpBias,
    /// `W_t`, `[d, d]`.
    TargetWeight,
    /// `w_s`, `[d]`.
    TargetBias,
    /// `U`, `[d, 2d]`.
    MatchWeight,
    /// `u_b`, `[d]`.
    MatchBias,
    /// `u`, `[1, d]`.
    MatchOutWeight,
}

/// Number of parameters.
pub(crate) const PARAM_COUNT: usize = 9;

impl Param {
    /// Every parameter, in initialisation order (which fixes what a seed produces); a
    /// parameter's position here is its [`Param::index`].
    pub const ALL: [Param; PARAM_COUNT] = [
        Param::ProjWeight,
        Param::ProjBias,
        Param::OpWeight,
        Param::OpBias,
        Param::TargetWeight,
        Param::TargetBias,
        Param::MatchWeight,
        Param::MatchBias,
        Param::MatchOutWeight,
    ];

    /// Position in [`Param::ALL`], for arrays indexed by parameter.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Name in the [`VarMap`](candle_nn::VarMap) and in the saved weights.
    pub const fn name(self) -> &'static str {
        match self {
            Param::ProjWeight => "proj.weight",
            Param::ProjBias => "proj.bias",
            Param::OpWeight => "op.weight",
            Param::OpBias => "op.bias",
            Param::TargetWeight => "target.weight",
            Param::TargetBias => "target.bias",
            Param::MatchWeight => "match.weight",
            Param::MatchBias => "match.bias",
            Param::MatchOutWeight => "match_out.weight",
        }
    }

    /// The parameter called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Shape, row-major, as torch's `Linear` lays out weights (`[out, in]`) and biases.
    pub fn shape(self, dims: HeadDims) -> Vec<usize> {
        let HeadDims {
            input,
            proj: d,
            ops: n,
        } = dims;
        match self {
            Param::ProjWeight => vec![d, input],
            Param::OpWeight => vec![n, 3 * d],
            Param::OpBias => vec![n],
            Param::TargetWeight => vec![d, d],
            Param::MatchWeight => vec![d, 2 * d],
            Param::ProjBias | Param::TargetBias | Param::MatchBias => vec![d],
            Param::MatchOutWeight => vec![1, d],
        }
    }

    /// Number of values, `None` when it overflows `usize`.
    pub fn numel(self, dims: HeadDims) -> Option<usize> {
        self.shape(dims)
            .iter()
            .try_fold(1usize, |acc, &x| acc.checked_mul(x))
    }

    /// Inputs of the layer the parameter belongs to: its initial values are drawn from
    /// `(-1/√fan_in, 1/√fan_in)`, as torch's `Linear` does.
    pub fn fan_in(self, dims: HeadDims) -> usize {
        let d = dims.proj;
        match self {
            Param::ProjWeight | Param::ProjBias => dims.input,
            Param::OpWeight | Param::OpBias => 3 * d,
            Param::TargetWeight | Param::TargetBias | Param::MatchOutWeight => d,
            Param::MatchWeight | Param::MatchBias => 2 * d,
        }
    }
}

/// One value per parameter, indexed by [`Param::index`]: `make` is called on each parameter
/// in [`Param::ALL`] order, and the first error is returned.
pub(crate) fn per_param<T>(mut make: impl FnMut(Param) -> Result<T>) -> Result<[T; PARAM_COUNT]> {
    let mut values = Vec::with_capacity(PARAM_COUNT);
    for param in Param::ALL {
        values.push(make(param)?);
    }
    values.try_into().map_err(|v: Vec<T>| {
        Error::tensor(
            "action head",
            format!("{} values for {PARAM_COUNT} parameters", v.len()),
        )
    })
}
