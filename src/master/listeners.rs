//! The addresses the cluster serves and their sockets: one [`Listener`]
//! per address (TCP over IPv4 or IPv6, or a Unix socket), each either one
//! socket every worker accepts on (shared mode, a Unix socket, an
//! inherited socket) or one `SO_REUSEPORT` socket per slot (a group of its
//! own, steered on its own: [`super::steering`]). Every worker serves every
//! address: it gets, per listener, its slot's socket or the shared one.
//!
//! Where it stops: binding a socket is [`crate::listen`]'s; when a slot's
//! sockets open and close is the slot table's ([`super::reload`]).

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;

use super::steering::Steering;
use crate::config::{Balance, Config, ListenAddr};
use crate::listen::UnixSocketFile;

/// One address the cluster serves.
#[derive(Debug)]
pub(super) struct Listener {
    /// The address, as bound.
    pub(super) addr: ListenAddr,
    /// The one socket every worker accepts on; `None` when each slot has
    /// its own (reuseport mode), in [`super::slot::Slot::listeners`].
    pub(super) shared: Option<OwnedFd>,
    /// The program choosing among the slots' own sockets for this address,
    /// when the master steers their group.
    pub(super) steering: Option<Steering>,
}

/// What [`bind`] opened.
pub(super) struct Bound {
    /// The addresses served, in the order given.
    pub(super) listeners: Vec<Listener>,
    /// Per slot, per listener: the slot's own socket, or `None` where the
    /// listener is shared. Its length is the number of slots.
    pub(super) slots: Vec<Vec<Option<OwnedFd>>>,
    /// The Unix socket files this process made.
    pub(super) unix_files: Vec<UnixSocketFile>,
}

/// The addresses `config` asks for: `config.listen`, or the default one.
fn addresses(config: &Config) -> Vec<&str> {
    if config.listen.is_empty() {
        vec![crate::config::DEFAULT_LISTEN]
    } else {
        config.listen.iter().map(String::as_str).collect()
    }
}

/// Opens the listening sockets, or takes the inherited ones (`LISTEN_FDS`
/// from a service manager, or from the master this one replaces when
/// `upgraded`). `group_known`: the slots' sockets joined their groups in
/// slot order, so the master may steer them.
pub(super) fn bind(
    config: &Config,
    inherited: Option<Vec<OwnedFd>>,
    upgraded: bool,
    group_known: bool,
) -> io::Result<Bound> {
    let mut bound = match inherited {
        Some(fds) => adopt(config, fds, upgraded)?,
        None => {
            let mut bound = Bound {
                listeners: Vec::new(),
                slots: (0..config.workers).map(|_| Vec::new()).collect(),
                unix_files: Vec::new(),
            };
            for addr in addresses(config) {
                if let Err(e) = bind_one(config, addr, &mut bound) {
                    // Nothing is served: the socket files made so far go.
                    for file in bound.unix_files.drain(..) {
                        file.remove();
                    }
                    return Err(e);
                }
            }
            bound
        }
    };
    if group_known {
        for (k, l) in bound.listeners.iter_mut().enumerate() {
            if l.shared.is_some() {
                continue;
            }
            let sockets: Vec<&OwnedFd> = bound.slots.iter().filter_map(|s| s[k].as_ref()).collect();
            l.steering = Steering::start(&l.addr, &sockets);
        }
    }
    // One line per address, the address last on it (tools read it).
    for l in &bound.listeners {
        log::info!("listening on {}", l.addr);
    }
    Ok(bound)
}

/// Binds `addr` (`host:port` or `unix:PATH`) and adds it to `bound`.
fn bind_one(config: &Config, addr: &str, bound: &mut Bound) -> io::Result<()> {
    if let Some(path) = crate::listen::unix_path(addr) {
        // A Unix socket has no SO_REUSEPORT group: every worker accepts on
        // the one socket.
        let (fd, file) = crate::listen::bind_unix(path, config.backlog, config.unix_mode)?;
        bound.unix_files.push(file);
        add_shared(bound, ListenAddr::Unix(path.to_path_buf()), fd);
        return Ok(());
    }
    let sa = crate::listen::resolve(addr)?;
    match config.balance {
        Balance::Shared => {
            let fd = crate::listen::bind_addr(sa, false, config.backlog)?;
            let addr = crate::listen::local_addr(&fd)?;
            add_shared(bound, addr, fd);
        }
        Balance::ReusePort => {
            // A plain bind first: SO_REUSEPORT alone would let this cluster
            // join another program's group on a port in use (same user)
            // instead of failing. It also picks the port once for port 0.
            let addr = crate::listen::probe_addr(sa)?;
            for slot in &mut bound.slots {
                slot.push(Some(crate::listen::bind_addr(addr, true, config.backlog)?));
            }
            bound.listeners.push(Listener { addr: ListenAddr::Tcp(addr), shared: None, steering: None });
        }
    }
    Ok(())
}

/// Adds a listener whose one socket every worker accepts on.
fn add_shared(bound: &mut Bound, addr: ListenAddr, fd: OwnedFd) {
    for slot in &mut bound.slots {
        slot.push(None);
    }
    bound.listeners.push(Listener { addr, shared: Some(fd), steering: None });
}

/// Serves inherited sockets, grouped by the address each is bound to, in
/// the order they came. An address with as many sockets as there are
/// workers (or, handed over by an upgrade, several) gets one per slot; an
/// address with one socket is shared. Sockets handed over by an upgrade
/// are all kept (closing one would reset the connections queued in it).
fn adopt(config: &Config, fds: Vec<OwnedFd>, upgraded: bool) -> io::Result<Bound> {
    let mut order: Vec<ListenAddr> = Vec::new();
    let mut groups: HashMap<String, Vec<OwnedFd>> = HashMap::new();
    for fd in fds {
        let addr = crate::listen::local_addr(&fd)?;
        let key = addr.to_string();
        if !groups.contains_key(&key) {
            order.push(addr);
        }
        groups.entry(key).or_default().push(fd);
    }
    // The number of slots: that of the first address with a socket per
    // slot, else one per worker.
    let per_slot = |n: usize| n > 1 && (n == config.workers || upgraded);
    let slots = order.iter().map(|a| groups[&a.to_string()].len()).find(|&n| per_slot(n)).unwrap_or(config.workers);
    let mut bound =
        Bound { listeners: Vec::new(), slots: (0..slots).map(|_| Vec::new()).collect(), unix_files: Vec::new() };
    for addr in order {
        let mut fds = groups.remove(&addr.to_string()).unwrap_or_default();
        if fds.len() == slots && per_slot(fds.len()) {
            log::info!("using {} inherited sockets on {addr}, one per worker", fds.len());
            for (slot, fd) in bound.slots.iter_mut().zip(fds) {
                slot.push(Some(fd));
            }
            bound.listeners.push(Listener { addr, shared: None, steering: None });
        } else {
            if fds.len() > 1 {
                log::warn!("{} inherited sockets on {addr} for {slots} workers: serving the first", fds.len());
            }
            let fd = fds.swap_remove(0);
            log::info!("using inherited socket {addr}");
            add_shared(&mut bound, addr, fd);
        }
    }
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Inherited sockets are grouped by address: two of one address for two
    /// workers give one per slot; one of an address is shared.
    #[test]
    fn inherited_sockets_are_grouped_by_address() {
        let config = Config { workers: 2, ..Config::default() };
        let first = crate::listen::bind_addr("127.0.0.1:0".parse().unwrap(), true, 16).unwrap();
        let ListenAddr::Tcp(port_addr) = crate::listen::local_addr(&first).unwrap() else { panic!() };
        let second = crate::listen::bind_addr(port_addr, true, 16).unwrap();
        let other = crate::listen::bind_addr("127.0.0.1:0".parse().unwrap(), false, 16).unwrap();
        let raw = [first.as_raw_fd(), other.as_raw_fd(), second.as_raw_fd()];
        let bound = adopt(&config, vec![first, other, second], false).unwrap();
        assert_eq!(bound.listeners.len(), 2);
        assert_eq!(bound.listeners[0].addr, ListenAddr::Tcp(port_addr));
        assert!(bound.listeners[0].shared.is_none());
        assert!(bound.listeners[1].shared.as_ref().is_some_and(|fd| fd.as_raw_fd() == raw[1]));
        assert_eq!(bound.slots.len(), 2);
        let own: Vec<i32> = bound.slots.iter().map(|s| s[0].as_ref().unwrap().as_raw_fd()).collect();
        assert_eq!(own, [raw[0], raw[2]]);
        assert!(bound.slots.iter().all(|s| s[1].is_none()));
    }

    /// Where the count of an address's sockets is not the workers', the
    /// first is shared (a service manager's mistake, said in the log).
    #[test]
    fn a_group_of_another_size_serves_its_first_socket() {
        let config = Config { workers: 3, ..Config::default() };
        let first = crate::listen::bind_addr("127.0.0.1:0".parse().unwrap(), true, 16).unwrap();
        let ListenAddr::Tcp(addr) = crate::listen::local_addr(&first).unwrap() else { panic!() };
        let second = crate::listen::bind_addr(addr, true, 16).unwrap();
        let raw = first.as_raw_fd();
        let bound = adopt(&config, vec![first, second], false).unwrap();
        assert_eq!(bound.slots.len(), 3);
        assert_eq!(bound.listeners.len(), 1);
        assert!(bound.listeners[0].shared.as_ref().is_some_and(|fd| fd.as_raw_fd() == raw));
    }
}
