//! The `clisc` command line, linked into the end-to-end test crate so that
//! its tests can run the CLI in a subprocess (`CARGO_BIN_EXE_clisc-cli`):
//! the same entry point as the `clisc` binary of the host crate.

fn main() -> std::process::ExitCode {
    clisc::cli::main()
}
