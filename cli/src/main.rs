//! `forkring`, the server: a prefork HTTP/1.1 cluster that answers `GET /`
//! with `Hello, World!`, sends `POST /echo` bodies back, serves the files
//! under `--static DIR` at `/files/`, and takes every operations flag of
//! the runtime (workers, balancing, limits, timeouts, drain, watchdog,
//! recycling, privileges, metrics, access log). `make run` starts it;
//! `forkring --help` lists the flags and the signals.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use forkring_cli::{App, Options};

#[derive(Parser)]
#[command(name = "forkring", version, about = about(), after_help = after_help())]
struct Cli {
    #[command(flatten)]
    options: Options,
}

/// What `--help` says before the flags: what it is, and its routes.
fn about() -> String {
    format!("forkring: a prefork HTTP/1.1 server\n\n{}", forkring_cli::ROUTES)
}

/// What `--help` says after the flags: the log, the signals.
fn after_help() -> String {
    format!(
        "Logging: RUST_LOG (env_logger's syntax, e.g. warn,forkring::master=debug)\n\
         sets the levels; --log sets the default level over it.\n\n{}\n\n{}",
        forkring_cli::SIGNALS,
        forkring_cli::EXIT_STATUSES
    )
}

fn main() -> ExitCode {
    let cli: Cli = match forkring_cli::parse(Cli::command()) {
        Ok(cli) => cli,
        Err(status) => return status,
    };
    let options = cli.options;
    if options.check_uring {
        return forkring_cli::check_uring();
    }
    let rust_log = std::env::var("RUST_LOG").ok();
    let version = concat!("forkring ", env!("CARGO_PKG_VERSION"));
    let server = match forkring_cli::prepare(&options, version, rust_log.as_deref()) {
        Ok(server) => server,
        Err(status) => return status,
    };
    let static_dir = options.static_dir.clone();
    let server = server.on_event(|event, _ctl| log::info!("{event}"));
    forkring_cli::served(server.serve(move || App::new(static_dir.as_deref())))
}
