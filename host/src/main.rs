//! The `wasmdm` command: a device host managed over LwM2M, and the tools a
//! guest developer and an operator use around it. Each command group lives
//! in its own file under `cli/`; the logic lives in the library.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(args.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::dispatch(args.command)) {
        Ok(code) => code,
        Err(e) => {
            // Errors quote package text (a TOML error shows the offending line): escape it,
            // keeping the line structure of multi-line reports.
            let text = format!("{e:#}");
            eprintln!("error: {}", wasmdm_package::display::escape_lines(&text));
            std::process::ExitCode::FAILURE
        }
    }
}
