//! `sd_notify`: state lines for systemd (`READY=1`, `RELOADING=1` with
//! `MONOTONIC_USEC=`, `STOPPING=1`, `STATUS=...`, `WATCHDOG=1`), sent only
//! when `NOTIFY_SOCKET` is set.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set once this master has handed the service to a new master (binary
/// upgrade): from then on only the new one speaks to systemd.
static SILENT: AtomicBool = AtomicBool::new(false);

/// Stops every later notification from this process.
pub(super) fn silence() {
    SILENT.store(true, Ordering::Relaxed);
}

/// Whether systemd listens (`NOTIFY_SOCKET` is set).
pub(super) fn enabled() -> bool {
    !SILENT.load(Ordering::Relaxed) && std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Sends a state line to systemd when `NOTIFY_SOCKET` is set; failures are
/// logged at debug level (a missing manager must not stop the server).
pub(super) fn notify(state: &str) {
    if SILENT.load(Ordering::Relaxed) {
        return;
    }
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let path = path.to_string_lossy().into_owned();
    let Ok(sock) = UnixDatagram::unbound() else { return };
    let r = if let Some(abstract_name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = r {
        log::debug!("sd_notify {state}: {e}");
    }
}

/// `RELOADING=1` with the `CLOCK_MONOTONIC` time it began, which
/// `Type=notify-reload` requires (systemd 253 and later ignore a
/// `RELOADING=1` without it).
pub(super) fn reloading() {
    let usec = crate::sys::monotonic_usec();
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`, for this
/// process when `WATCHDOG_PID` names one), if any.
pub(super) fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}
