//! `generate`: text from a GGUF model on the CPU and CUDA GPUs. See `generate --help`.

fn main() {
    std::process::exit(strata_engine::generate::main_with(std::env::args()));
}
