//! The `clisc` command-line tool.

fn main() -> std::process::ExitCode {
    clisc_host::hugepages::enable_for_tensors();
    clisc_host::cli::main()
}
