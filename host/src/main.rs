//! The `wasmdm` command: a device host managed over LwM2M, and the tools a
//! guest developer and an operator use around it. Each command group lives
//! in its own file under `cli/`; the logic lives in the library.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let mut args = cli::Cli::parse();
    if args.command.prints_a_report() {
        quit_quietly_on_closed_stdout();
    }
    cli::init_tracing(&mut args);
    // Guests run as tasks of this runtime and yield at every epoch tick
    // (10 ms), so a scheduler tick can last a whole slice. Tokio polls timers
    // and sockets only every `event_interval` ticks (61 by default) and takes
    // tasks woken from outside (a timer, a socket) from its global queue only
    // every `global_queue_interval` ticks (31): behind spinning guests a
    // 200 ms timer service fired every ~600 ms. Checking both at every tick
    // bounds the wait by about one slice per busy worker (BENCHMARKS.md,
    // "CPU fairness").
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .event_interval(1)
        .global_queue_interval(1)
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

/// `wasmdm list | grep -q counter` or `wasmdm logs app | head` closes stdout
/// early. Rust ignores SIGPIPE, so the next `println!` would panic with
/// "Broken pipe"; a command that only prints a report instead ends quietly
/// on it, as Unix tools do. Long-running commands (device, server, demo,
/// run) keep ignoring SIGPIPE: a closed pipe must never kill a device.
fn quit_quietly_on_closed_stdout() {
    // SAFETY: called first thing in `main`, before any thread exists, and
    // SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
