//! The log of a forkring server: one line per record on stderr,
//! `forkring[PID] LEVEL: message` (with the record's module after the
//! level when the log shows debug records), so that lines from the master
//! and its workers can be told apart and read by a program.
//!
//! Where it stops: which records are worth a line is decided where they
//! are written (the library logs through the `log` facade); this only
//! chooses the levels and the format.

use std::io::Write;

use log::LevelFilter;

/// Installs the logger. Levels: `info` by default; `rust_log` (the value of
/// `RUST_LOG`, env_logger's syntax, e.g. `warn,forkring::driver=debug`)
/// changes them; `level` (`--log`), when given, sets the default level over
/// both.
pub fn init_logger(level: Option<LevelFilter>, rust_log: Option<&str>) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(LevelFilter::Info);
    if let Some(spec) = rust_log {
        builder.parse_filters(spec);
    }
    if let Some(level) = level {
        builder.filter_level(level);
    }
    builder.format(|out, record| {
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warn",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        // env_logger writes each formatted record with one write, so lines
        // of different processes sharing stderr do not mix.
        if log::max_level() >= LevelFilter::Debug {
            writeln!(out, "forkring[{}] {level} {}: {}", std::process::id(), record.target(), record.args())
        } else {
            writeln!(out, "forkring[{}] {level}: {}", std::process::id(), record.args())
        }
    });
    // Only fails if a logger is already set, which nothing else here does.
    let _ = builder.try_init();
}
