//! Strata's engine: reads GGUF files, plans memory, runs the transformer layer by layer on
//! the devices the plan gives, and samples tokens.
//!
//! The device side is a one-way stack, each layer using only those before it:
//! [`ledger`] (buffers reserved against budgets) → [`devices`] (which exist, what they
//! report) → [`backend`] (one interface: host, posing, CUDA) → [`runner`] (the forward pass
//! across devices) → [`load`] (plan, allocate, recover) → the CLIs ([`generate`]).

pub mod backend;
pub mod buffers;
pub mod config;
pub mod devices;
pub mod generate;
pub mod gguf;
pub mod huge;
pub mod ledger;
pub mod load;
pub mod model;
pub mod perplexity;
pub mod plan;
pub mod pool;
pub mod runner;
pub mod sampler;
pub mod tokenizer;
