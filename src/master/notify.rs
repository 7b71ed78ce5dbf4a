//! `sd_notify`: state lines for systemd (`READY=1`, `RELOADING=1`,
//! `STOPPING=1`, `STATUS=...`), sent only when `NOTIFY_SOCKET` is set.

use std::os::unix::net::UnixDatagram;

/// Sends a state line to systemd when `NOTIFY_SOCKET` is set; failures are
/// logged at debug level (a missing manager must not stop the server).
pub(super) fn notify(state: &str) {
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
