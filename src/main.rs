//! `wasm-node-cache`: the operator CLI, which is the library's `cli::main`. A node builds the same
//! three lines in its own workspace to bake with its own wasmtime (docs/deploying.md).

fn main() -> std::process::ExitCode {
    wasm_node_cache::cli::main()
}
