//! Training the memory action head on the candle path: data, rewards, the GRPO objective,
//! features cached on disk, the optimiser, checkpoints and the training loop.

pub mod checkpoint;
pub mod data;
pub mod features;
pub mod grpo;
pub(crate) mod head_grad;
pub mod optim;
pub mod reward;
pub mod rng;
pub mod trainer;
