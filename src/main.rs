fn main() -> std::process::ExitCode {
    release_coordinator::cli::main()
}
