//! One file per subcommand.

pub mod act;
pub mod bench;
pub mod encode;
pub mod generate;
pub mod info;
pub mod load;
pub mod logits;
pub mod memory_eval;
pub mod quantize;
pub mod serve;
pub mod synth_memory;
pub mod train_head;
