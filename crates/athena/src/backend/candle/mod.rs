//! The candle backend: OLMoE's forward pass on candle tensors (CPU, CUDA or Metal).

mod contract;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda")]
mod fused_cuda;
mod linear;
mod load;
mod moe;
#[cfg(feature = "cuda")]
mod moe_cuda;
mod olmoe;
mod provider;
mod rope;
mod session;
mod weights;

pub use linear::{Embedding, Linear};
pub use load::{load_olmoe, load_olmoe_with, LoadOptions};
pub use olmoe::Olmoe;
pub use provider::CandleProvider;
pub use session::Session;
pub use weights::BuildOptions;
