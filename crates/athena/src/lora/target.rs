//! Which module of OLMoE an adapter targets, in Hugging Face names, and the checks of a
//! target against the model.

use crate::checkpoint::OlmoeArgs;
use crate::error::{Error, Result};

/// One of the attention projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttnProj {
    /// `q_proj`: [heads·head_dim, H].
    Q,
    /// `k_proj`: [kv_heads·head_dim, H].
    K,
    /// `v_proj`: [kv_heads·head_dim, H].
    V,
    /// `o_proj`: [H, heads·head_dim].
    O,
}

impl AttnProj {
    /// All four, in checkpoint order.
    pub const ALL: [AttnProj; 4] = [AttnProj::Q, AttnProj::K, AttnProj::V, AttnProj::O];

    /// The HF module name: `q_proj`, `k_proj`, `v_proj` or `o_proj`.
    pub fn name(self) -> &'static str {
        match self {
            AttnProj::Q => "q_proj",
            AttnProj::K => "k_proj",
            AttnProj::V => "v_proj",
            AttnProj::O => "o_proj",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        AttnProj::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// One of an expert's three projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExpertProjKind {
    /// `gate_proj`: [I, H].
    Gate,
    /// `up_proj`: [I, H].
    Up,
    /// `down_proj`: [H, I].
    Down,
}

impl ExpertProjKind {
    /// All three, in checkpoint order.
    pub const ALL: [ExpertProjKind; 3] = [
        ExpertProjKind::Gate,
        ExpertProjKind::Up,
        ExpertProjKind::Down,
    ];

    /// The HF module name: `gate_proj`, `up_proj` or `down_proj`.
    pub fn name(self) -> &'static str {
        match self {
            ExpertProjKind::Gate => "gate_proj",
            ExpertProjKind::Up => "up_proj",
            ExpertProjKind::Down => "down_proj",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        ExpertProjKind::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Which linear module of OLMoE an adapter targets, in HF names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoraTarget {
    /// `model.layers.{layer}.self_attn.{proj}`.
    Attn {
        /// Decoder layer.
        layer: usize,
        /// Which projection.
        proj: AttnProj,
    },
    /// The router, `model.layers.{layer}.mlp.gate`.
    Router {
        /// Decoder layer.
        layer: usize,
    },
    /// `model.layers.{layer}.mlp.experts.{expert}.{proj}`.
    Expert {
        /// Decoder layer.
        layer: usize,
        /// Expert index.
        expert: usize,
        /// Which projection.
        proj: ExpertProjKind,
    },
}

impl LoraTarget {
    /// The HF module name, e.g. `model.layers.0.self_attn.q_proj`, `model.layers.0.mlp.gate`,
    /// `model.layers.0.mlp.experts.5.gate_proj`.
    pub fn hf_name(&self) -> String {
        match self {
            LoraTarget::Attn { layer, proj } => {
                format!("model.layers.{layer}.self_attn.{}", proj.name())
            }
            LoraTarget::Router { layer } => format!("model.layers.{layer}.mlp.gate"),
            LoraTarget::Expert {
                layer,
                expert,
                proj,
            } => format!("model.layers.{layer}.mlp.experts.{expert}.{}", proj.name()),
        }
    }

    /// Parses an HF module name back; `None` for anything that is not one of the modules
    /// above. Layer and expert indices are not checked against a model.
    pub fn from_hf_name(name: &str) -> Option<LoraTarget> {
        let rest = name.strip_prefix("model.layers.")?;
        let (layer, rest) = rest.split_once('.')?;
        let layer = parse_index(layer)?;
        let parts: Vec<&str> = rest.split('.').collect();
        match parts.as_slice() {
            ["self_attn", p] => Some(LoraTarget::Attn {
                layer,
                proj: AttnProj::from_name(p)?,
            }),
            ["mlp", "gate"] => Some(LoraTarget::Router { layer }),
            ["mlp", "experts", e, p] => Some(LoraTarget::Expert {
                layer,
                expert: parse_index(e)?,
                proj: ExpertProjKind::from_name(p)?,
            }),
            _ => None,
        }
    }

    /// The module's weight shape (out, in) for this model.
    pub fn shape(&self, args: &OlmoeArgs) -> (usize, usize) {
        let h = args.hidden_size;
        let q = args.num_attention_heads * args.head_dim;
        let kv = args.num_key_value_heads * args.head_dim;
        match self {
            LoraTarget::Attn { proj, .. } => match proj {
                AttnProj::Q => (q, h),
                AttnProj::K | AttnProj::V => (kv, h),
                AttnProj::O => (h, q),
            },
            LoraTarget::Router { .. } => (args.num_experts, h),
            LoraTarget::Expert { proj, .. } => match proj {
                ExpertProjKind::Gate | ExpertProjKind::Up => (args.intermediate_size, h),
                ExpertProjKind::Down => (h, args.intermediate_size),
            },
        }
    }

    /// The decoder layer the module belongs to.
    pub fn layer(&self) -> usize {
        match *self {
            LoraTarget::Attn { layer, .. }
            | LoraTarget::Router { layer }
            | LoraTarget::Expert { layer, .. } => layer,
        }
    }
}

/// A decimal index without sign or leading `+` (what Python's `str(int)` writes).
pub(crate) fn parse_index(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The module's name in a message, with its shape.
pub(crate) fn describe(t: &LoraTarget, args: &OlmoeArgs) -> String {
    let (o, i) = t.shape(args);
    format!("`{}` [{o}, {i}]", t.hf_name())
}

/// Refuses a layer or expert index past the model's.
pub(crate) fn check_indices(t: &LoraTarget, args: &OlmoeArgs, tensor: &str) -> Result<()> {
    if t.layer() >= args.num_hidden_layers {
        return Err(Error::tensor(
            tensor,
            format!(
                "layer {} but the model has {} layers",
                t.layer(),
                args.num_hidden_layers
            ),
        ));
    }
    if let LoraTarget::Expert { expert, .. } = t {
        if *expert >= args.num_experts {
            return Err(Error::tensor(
                tensor,
                format!(
                    "expert {expert} but the model has {} experts",
                    args.num_experts
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_round_trip() {
        let targets = [
            LoraTarget::Attn {
                layer: 3,
                proj: AttnProj::O,
            },
            LoraTarget::Router { layer: 0 },
            LoraTarget::Expert {
                layer: 15,
                expert: 63,
                proj: ExpertProjKind::Down,
            },
        ];
        for t in targets {
            assert_eq!(LoraTarget::from_hf_name(&t.hf_name()), Some(t.clone()));
        }
        for bad in [
            "model.layers.0.mlp.experts.gate_up_proj",
            "model.layers.x.mlp.gate",
            "model.layers.+1.mlp.gate",
            "lm_head",
            "model.layers.0.self_attn.q_norm",
        ] {
            assert_eq!(LoraTarget::from_hf_name(bad), None, "{bad}");
        }
    }
}
