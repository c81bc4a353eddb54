//! The `crisp-relay` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    crisp_relay::cli::main()
}
