//! [`MemoryActionHead`]: what to do with a new fact, given the memories already held.
//!
//! The head reads pooled hidden states of the backbone (one vector of width `input_dim` for
//! the fact, one per candidate memory) and scores
//!
//! - an operation out of [`ActionHeadConfig::operations`] (by default `ADD`, `UPDATE`,
//!   `DELETE`, `NOOP`), and
//! - for the operations that name an existing memory ([`ActionHeadConfig::target_operations`],
//!   by default `UPDATE` and `DELETE`), which memory they name.
//!
//! # Architecture
//!
//! With `d = proj_dim`, a fact `f` and memories `m_1..m_M`:
//!
//! ```text
//! f'   = tanh(P f + p)                      shared projection D → d   (proj.weight, proj.bias)
//! m_j' = tanh(P m_j + p)
//! c    = Σ_j softmax_j(f'·m_j' / √d) m_j'  attention over the memories; 0 when M = 0
//! op   = W_op [f'; c; f' ⊙ c] + b_op        operation logits          (op.weight, op.bias)
//! t_j  = (W_t f' + w_s) · m_j'              target logits: bilinear   (target.weight, target.bias)
//!      + u · tanh(U [f' ⊙ m_j'; |f' − m_j'|] + u_b)
//!                                           plus a match MLP  (match.*, match_out.*)
//! ```
//!
//! When there are no memories, the operations that need a target get logit [`MASKED_LOGIT`]
//! (-1e30), so their probability is exactly 0. This mask is part of
//! [`MemoryActionHead::scores`], so a policy trained on the scores is the policy that
//! [`MemoryActionHead::decide`] follows.
//!
//! The parameters live in a [`VarMap`](candle_nn::VarMap) under the names above, listed
//! once with their shapes in `params.rs`; every step is a differentiable candle op
//! (`forward.rs`), so the head can be trained (GRPO) on the scores directly.
//!
//! # On disk
//!
//! A saved head is a directory holding [`WEIGHTS_FILE`] (the nine tensors by name, f32) and
//! [`CONFIG_FILE`] (`{"config": .., "input_dim": .., "format_version": 2}`), each written
//! atomically, weights first (`file.rs`).
//!
//! # Files
//!
//! `params.rs` is the leaf: the parameter table. `config.rs` reads it to bound a head's
//! size; `head.rs` builds a head from it; `forward.rs` and `file.rs` add the scores and the
//! file format to [`MemoryActionHead`]. Nothing here imports the training code, which
//! reads the same table for its own pass over the parameters.

mod config;
mod file;
mod forward;
mod head;
pub(crate) mod params;

pub use config::ActionHeadConfig;
pub use file::{CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE};
pub use head::{Action, BatchScores, HeadScores, MemoryActionHead, MASKED_LOGIT};

#[cfg(test)]
mod file_tests;
#[cfg(test)]
mod tests;
