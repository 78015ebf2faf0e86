//! The `sealgate` binary: everything is in [`sealgate::cli`].

fn main() -> std::process::ExitCode {
    sealgate::cli::main()
}
