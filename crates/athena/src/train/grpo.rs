//! GRPO objective.
