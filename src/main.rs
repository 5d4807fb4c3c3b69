//! `wasm-node-cache`: the operator CLI over the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
