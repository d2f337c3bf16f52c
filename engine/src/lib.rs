//! Strata's engine: reads GGUF files, plans memory, runs the transformer layer by layer on
//! the devices the plan gives, and samples tokens.

pub mod accel;
pub mod alloc;
pub mod buffers;
pub mod config;
pub mod cuda;
pub mod device;
pub mod generate;
pub mod gguf;
pub mod huge;
pub mod load;
pub mod model;
pub mod plan;
pub mod pool;
pub mod runner;
pub mod sampler;
pub mod tokenizer;
