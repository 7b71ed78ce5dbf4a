//! The command line of a forkring server, shared by `forkring` (the server
//! a user runs, `src/main.rs`) and the project's test fixture
//! (`forkring-fixture`), so that both take the same flags with the same
//! meaning and log in the same format.
//!
//! - [`Options`]: the operations flags and the [`forkring::Server`] they
//!   make;
//! - [`App`]: the product's routes (`/`, `/echo`, `/files/`);
//! - [`parse`], [`prepare`], [`served`]: from the command line to an exit
//!   status ([`EXIT_USAGE`], [`EXIT_CONFIG`], 1), with one-line errors;
//! - [`init_logger`]: the log on stderr, `forkring[PID] LEVEL: message`.
//!
//! Where it stops: routes that exist only for tests and benchmarks are the
//! fixture's; the runtime itself is the `forkring` library, which knows
//! nothing of command lines.

mod app;
mod duration;
mod logger;
mod options;

use std::io;
use std::process::ExitCode;

use clap::error::ErrorKind;
use forkring::files::StaticDir;
use forkring::{Backend, Server};

pub use app::{method_not_allowed, App, ROUTES};
pub use duration::{parse_duration, Bare};
pub use logger::init_logger;
pub use options::{at_least_one, millis, number, seconds, Level, Millis, Options};

/// The exit status of a bad flag or environment variable: `EX_USAGE` of
/// sysexits.h.
pub const EXIT_USAGE: u8 = 64;

/// The exit status of a configuration that cannot serve (an address that is
/// not one, a `--static` directory that is not there, a worker that cannot
/// start with these settings): `EX_CONFIG` of sysexits.h, which systemd's
/// `RestartPreventExitStatus=78` keeps from being restarted in a loop.
pub const EXIT_CONFIG: u8 = forkring::ConfigError::EXIT_STATUS;

/// What `--help` says after the flags: the exit statuses.
pub const EXIT_STATUSES: &str = "\
Exit status: 0 after a clean shutdown; 64 for a bad flag or environment
variable; 78 for a configuration that cannot serve (a bad address, a
missing --static directory, a worker that cannot start); 1 for
any other failure (an address in use, workers killed at the drain timeout).";

/// What `--help` says after the flags: the signals the master answers.
pub const SIGNALS: &str = "\
Signals to the master:
  TERM, INT   graceful shutdown: stop accepting, finish requests, exit
  QUIT        immediate stop
  HUP         rolling reload: replace workers one at a time, losing nothing
              (under systemd, with RELOADING=1 and READY=1)
  TTIN, TTOU  one worker more, one worker fewer
  USR1        every worker reopens its access log
  USR2        binary upgrade: start the binary from disk (the path this
              process was started from) with the listening sockets; once
              its workers serve, this master drains its own and exits
              (under systemd, with MAINPID=; needs NotifyAccess=all)

Every lifecycle event (fork, online, listening, ready, draining, disconnect,
exit, fork failed) is logged at info level.";

/// Parses the process's arguments with `cmd`. `Err` holds the exit status
/// when there is nothing to serve: `--help` and `--version` print and
/// succeed; a bad flag prints one line (`NAME: what is wrong (see
/// --help)`) and exits with status [`EXIT_USAGE`].
pub fn parse<T: clap::FromArgMatches>(cmd: clap::Command) -> Result<T, ExitCode> {
    let name = cmd.get_name().to_owned();
    cmd.try_get_matches().and_then(|m| T::from_arg_matches(&m)).map_err(|e| usage(&name, e))
}

/// The exit status for a parse that ended without options.
fn usage(name: &str, e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // Nowhere to report a failed write of the help itself.
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{name}: {} (see --help)", one_line(&e.to_string()));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// The first line of clap's error text, without its `error: ` prefix.
fn one_line(text: &str) -> &str {
    let first = text.lines().next().unwrap_or("");
    first.strip_prefix("error: ").unwrap_or(first)
}

/// What every server binary does between parsing and serving: refuses a
/// bad `FORKRING_BACKEND` (status [`EXIT_USAGE`]), sets up the log
/// (`rust_log`: the `RUST_LOG` value to honour, if any), logs `version`, and
/// checks `--static` so that a typo fails the start instead of every
/// request (status [`EXIT_CONFIG`]). Returns the builder the flags make.
pub fn prepare(options: &Options, version: &str, rust_log: Option<&str>) -> Result<Server, ExitCode> {
    // The library reads FORKRING_BACKEND itself; checking it here turns a
    // typo into a usage error instead of a failed start.
    if let Err(e) = Backend::from_env() {
        eprintln!("forkring: {}: {e}", Backend::ENV);
        return Err(ExitCode::from(EXIT_USAGE));
    }
    init_logger(options.log.map(log::LevelFilter::from), rust_log);
    log::info!("{version}");
    if let Some(dir) = &options.static_dir {
        if let Err(e) = StaticDir::new(dir) {
            eprintln!("forkring: --static {}: {}", dir.display(), strip_os_error(&e.to_string()));
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    }
    Ok(options.server())
}

/// The exit status of a served cluster: 0 after a clean shutdown;
/// [`EXIT_CONFIG`] (with the reason on stderr) when the configuration
/// cannot serve ([`forkring::ConfigError`]), the master's own or a
/// worker's that could not start; 1 when it could not start or stopped on
/// any other error.
pub fn served(result: io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("forkring: {}", strip_os_error(&e.to_string()));
            if forkring::ConfigError::is(&e) {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `"bind 127.0.0.1:8080: Address already in use (os error 98)"` without the
/// trailing `(os error 98)`: the text already says it.
pub fn strip_os_error(msg: &str) -> &str {
    match msg.rfind(" (os error ") {
        Some(i) if msg.ends_with(')') => &msg[..i],
        _ => msg,
    }
}

/// `--check-uring`: sets up a small ring to see whether io_uring is allowed
/// (seccomp, `kernel.io_uring_disabled` and some sandboxes refuse it), says
/// so, and exits 0 if it is, 1 if not.
pub fn check_uring() -> ExitCode {
    match io_uring::IoUring::new(8) {
        Ok(_) => {
            println!("io_uring: available");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("io_uring: refused ({})", strip_os_error(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::{Args, Command, FromArgMatches};
    use forkring::{Backend, Limits, Timeouts};

    use super::*;

    /// `Options` as a command of its own.
    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        let cmd = Options::augment_args(Command::new("forkring"));
        let m = cmd.try_get_matches_from(std::iter::once("forkring").chain(args.iter().copied()))?;
        Options::from_arg_matches(&m)
    }

    #[test]
    fn without_flags_the_library_defaults_hold() {
        let o = parse(&[]).expect("no flags parse");
        assert_eq!(o.listen, ["127.0.0.1:8080"]);
        assert_eq!(o.workers, None);
        assert_eq!(o.backend, Backend::Auto);
        assert_eq!(o.timeouts(), Timeouts::default());
        assert_eq!(o.limits(), Limits::default());
        assert_eq!(o.log, None);
        assert_eq!(o.drain_delay, None);
        assert!(!o.pin && !o.reexec && !o.no_respawn && !o.check_uring);
    }

    #[test]
    fn every_flag_sets_what_it_names() {
        let args: Vec<&str> = "--listen [::1]:9000 --workers=1 --backend epoll --header-timeout 250 \
                               --idle-timeout=1500 --max-body 1024 --max-connections 10 --log debug \
                               --balance shared --drain-timeout 700 --drain-delay 300 --unix-mode 660 \
                               --worker-timeout 1.5 --max-requests 9 --max-requests-jitter 3 \
                               --max-worker-rss 2 --static /srv --user nobody --pin --reexec --no-respawn \
                               --metrics 127.0.0.1:9100 --access-log /tmp/a.log --check-uring"
            .split_whitespace()
            .collect();
        let o = parse(&args).expect("every flag parses");
        assert_eq!(o.listen, ["[::1]:9000"]);
        assert_eq!(o.workers, Some(1));
        assert_eq!(o.backend, Backend::Epoll);
        assert_eq!(o.timeouts().header, Duration::from_millis(250));
        assert_eq!(o.timeouts().idle, Duration::from_millis(1500));
        assert_eq!(o.timeouts().drain, Duration::from_millis(700));
        assert_eq!(o.limits().max_body, 1024);
        assert_eq!(o.max_connections, 10);
        assert_eq!(o.log, Some(Level::Debug));
        assert_eq!(o.balance, forkring::Balance::Shared);
        assert_eq!(o.drain_delay, Some(Millis(Duration::from_millis(300))));
        assert_eq!(o.unix_mode, Some(0o660));
        assert_eq!(o.worker_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(o.recycle().max_requests, Some(9));
        assert_eq!(o.recycle().max_requests_jitter, 3);
        assert_eq!(o.recycle().max_rss, Some(2 << 20));
        assert_eq!(o.static_dir.as_deref(), Some(std::path::Path::new("/srv")));
        assert_eq!(o.user.as_deref(), Some("nobody"));
        assert!(o.pin && o.reexec && o.no_respawn && o.check_uring);
        assert_eq!(o.metrics.as_deref(), Some("127.0.0.1:9100"));
        assert_eq!(o.access_log.as_deref(), Some(std::path::Path::new("/tmp/a.log")));
    }

    #[test]
    fn bad_flags_are_refused() {
        for args in [
            &["--workers", "0"][..],
            &["--balance", "random"],
            &["--workers", "x"],
            &["--backend", "kqueue"],
            &["--header-timeout", "0"],
            &["--idle-timeout", "-1"],
            &["--drain-delay", "0"],
            &["--max-body"],
            &["--max-connections", "0"],
            &["--max-requests", "0"],
            &["--max-worker-rss", "0"],
            &["--worker-timeout", "0.01"],
            &["--unix-mode", "9"],
            &["--listen", ""],
            &["--log", "loud"],
            &["--pin=yes"],
            &["--nope"],
            &["stray"],
        ] {
            assert!(parse(args).is_err(), "{args:?} should be refused");
        }
    }

    #[test]
    fn listen_repeats() {
        let o = parse(&["--listen", "127.0.0.1:8080", "--listen", "[::1]:8080", "--listen=unix:/run/f.sock"])
            .expect("three addresses parse");
        assert_eq!(o.listen, ["127.0.0.1:8080", "[::1]:8080", "unix:/run/f.sock"]);
        assert_eq!(o.server().config().listen, o.listen);
    }

    #[test]
    fn every_time_flag_takes_units_and_a_bare_number_keeps_its_old_unit() {
        let o = parse(&[
            "--header-timeout",
            "2s",
            "--idle-timeout",
            "1m30s",
            "--drain-timeout",
            "25s",
            "--drain-delay",
            "1.5s",
            "--worker-timeout",
            "250ms",
        ])
        .expect("units parse");
        assert_eq!(o.timeouts().header, Duration::from_secs(2));
        assert_eq!(o.timeouts().idle, Duration::from_secs(90));
        assert_eq!(o.timeouts().drain, Duration::from_secs(25));
        assert_eq!(o.drain_delay, Some(Millis(Duration::from_millis(1500))));
        assert_eq!(o.worker_timeout, Some(Duration::from_millis(250)));
        // Bare numbers: milliseconds, but seconds for --worker-timeout.
        let o = parse(&["--drain-timeout", "25000", "--worker-timeout", "30"]).expect("bare numbers parse");
        assert_eq!(o.timeouts().drain, Duration::from_secs(25));
        assert_eq!(o.worker_timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_bad_duration_names_its_flag_and_the_bare_unit() {
        for (flag, value, unit) in [
            ("--header-timeout", "10x", "milliseconds"),
            ("--idle-timeout", "1 s", "milliseconds"),
            ("--drain-timeout", "s", "milliseconds"),
            ("--drain-delay", "5 s", "milliseconds"),
            ("--worker-timeout", "30sec", "seconds"),
        ] {
            let e = parse(&[flag, value]).expect_err(value);
            let line = one_line(&e.to_string()).to_owned();
            assert!(line.contains(flag), "{line}");
            assert!(line.contains("expected a duration such as 30s") && line.contains(unit), "{line}");
        }
        let line = one_line(&parse(&["--worker-timeout", "2d"]).expect_err("too long").to_string()).to_owned();
        assert!(line.contains("--worker-timeout") && line.contains("between 100ms and 24h"), "{line}");
    }

    #[test]
    fn the_help_shows_defaults_with_their_units() {
        let help = Options::augment_args(Command::new("forkring")).render_help().to_string();
        assert!(help.contains("[default: 10s]") || help.contains("[default: 30s]"), "{help}");
        assert!(help.contains("a bare number is seconds") && help.contains("a bare number is milliseconds"), "{help}");
    }

    #[test]
    fn a_usage_error_is_one_line_without_the_prefix() {
        let e = parse(&["--workers", "0"]).expect_err("refused");
        let line = one_line(&e.to_string()).to_owned();
        assert!(line.contains("--workers") && line.contains("must be at least 1"), "{line}");
        assert!(!line.starts_with("error:"), "{line}");
    }

    #[test]
    fn os_error_suffix() {
        assert_eq!(
            strip_os_error("bind 127.0.0.1:8080: Address already in use (os error 98)"),
            "bind 127.0.0.1:8080: Address already in use"
        );
        assert_eq!(strip_os_error("no suffix"), "no suffix");
    }
}
