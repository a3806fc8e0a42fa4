//! The model layer the agent talks to: [`action_head`] decides what to do with a new fact.

pub mod action_head;
