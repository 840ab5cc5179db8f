//! The `clisc` command-line tool.

fn main() -> std::process::ExitCode {
    clisc::hugepages::enable_for_tensors();
    clisc::cli::main()
}
