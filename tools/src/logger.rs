//! The `log` facade's output for the servers the harness runs itself (the
//! flood server of `make stress`): stderr, one write per line, in the
//! format of forkring's demo server, `forkring[PID] level: message`, which
//! is what the harness reads a server's lifecycle events from
//! (`servers::parse_event`).

use std::io::Write;

/// Logs to stderr in the demo server's format.
struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

/// Sends the `log` facade's records at `level` and above to stderr. A
/// second call only changes the level.
pub fn init(level: log::LevelFilter) {
    // Fails only if a logger is already set, which is then this one.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// One record as a line.
fn line(pid: u32, level: log::Level, args: &std::fmt::Arguments<'_>) -> String {
    let level = match level {
        log::Level::Error => "error",
        log::Level::Warn => "warn",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    };
    format!("forkring[{pid}] {level}: {args}\n")
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // One write per line, so that the lines of the master and its
        // workers, which share the pipe, do not mix.
        let line = line(std::process::id(), record.level(), record.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_like_the_demo_servers() {
        let l = line(77, log::Level::Info, &format_args!("ready 0.1 pid={}", 1234));
        assert_eq!(l, "forkring[77] info: ready 0.1 pid=1234\n");
        let ev = crate::servers::parse_event(l.trim_end(), std::time::Instant::now()).expect("an event");
        assert_eq!((ev.kind.as_str(), ev.slot, ev.generation, ev.pid), ("ready", 0, 1, 1234));
    }
}
