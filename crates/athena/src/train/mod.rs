//! Training the memory action head on the candle path: data, rewards, the GRPO objective,
//! features cached on disk, the optimiser, checkpoints and the training loop.
//!
//! Imports go one way. Leaves: `rng`, `log`, `optim`, `grpo`, `data`, `reward`; then
//! `head_grad` (the head's hand-written pass, over the parameter table of
//! [`crate::models::action_head`]), `features`, `config`, `state`, `evaluate`; `step` and
//! `checkpoint` above those; [`trainer`] on top, which re-exports the types a caller needs;
//! [`run`] (one run from files to files, as `athena train-head` does it) above the trainer.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod evaluate;
pub mod features;
pub mod grpo;
pub(crate) mod head_grad;
pub mod log;
pub mod optim;
pub mod reward;
pub mod rng;
pub mod run;
mod state;
mod step;
pub mod trainer;
