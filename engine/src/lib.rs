//! Strata's engine: reads GGUF files, plans memory, runs the transformer layer by layer on
//! the devices the plan gives, and samples tokens.
