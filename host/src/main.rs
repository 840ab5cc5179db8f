//! The `clisc` command-line tool.

fn main() -> std::process::ExitCode {
    clisc_host::cli::main()
}
