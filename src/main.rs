fn main() -> std::process::ExitCode {
    mlink::cli::main()
}
