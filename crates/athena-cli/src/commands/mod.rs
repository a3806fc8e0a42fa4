//! One file per subcommand.

pub mod bench;
pub mod generate;
pub mod info;
pub mod logits;
