//! Strata's `perplexity`: a model's perplexity over a text, as llama.cpp's
//! `llama-perplexity` computes it, and KL divergence against a base model's
//! (`strata_engine::perplexity`).

fn main() {
    std::process::exit(strata_engine::perplexity::main_with(std::env::args()));
}
