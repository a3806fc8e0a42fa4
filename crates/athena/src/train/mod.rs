//! Training the memory action head on the candle path: data, rewards and the GRPO objective.

pub mod data;
pub mod features;
pub mod grpo;
pub mod reward;
pub mod trainer;
