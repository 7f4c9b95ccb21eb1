fn main() -> std::process::ExitCode {
    yinyom::cli::main()
}
