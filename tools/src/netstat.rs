//! The kernel's TCP counters that tell of connections refused or reset:
//! `ListenDrops` and `ListenOverflows` (`/proc/net/netstat`, `TcpExt`),
//! `EstabResets` and `OutRsts` (`/proc/net/snmp`, `Tcp`).
//!
//! Where it stops: the counters are the network namespace's, so every
//! program on the host adds to them. A harness reads them before and after
//! a run and prints the difference beside what its own client counted, as
//! context; it cannot tell whose connections they were.

use std::fmt;

/// The counters, at one moment or as a difference between two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpCounters {
    /// Handshakes a listening socket dropped, whatever the reason
    /// (`TcpExt ListenDrops`).
    pub listen_drops: u64,
    /// Of those, the ones dropped because the accept queue was full
    /// (`TcpExt ListenOverflows`).
    pub listen_overflows: u64,
    /// Connections that went from established (or close-wait) straight to
    /// closed, a reset sent or received (`Tcp EstabResets`).
    pub estab_resets: u64,
    /// Segments sent with the RST flag (`Tcp OutRsts`).
    pub out_rsts: u64,
}

impl TcpCounters {
    /// The counters now; zero for any the kernel does not show.
    pub fn read() -> TcpCounters {
        let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
        let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
        TcpCounters::parse(&netstat, &snmp)
    }

    /// Reads the counters from the text of `/proc/net/netstat` and
    /// `/proc/net/snmp`.
    pub fn parse(netstat: &str, snmp: &str) -> TcpCounters {
        TcpCounters {
            listen_drops: field(netstat, "TcpExt:", "ListenDrops"),
            listen_overflows: field(netstat, "TcpExt:", "ListenOverflows"),
            estab_resets: field(snmp, "Tcp:", "EstabResets"),
            out_rsts: field(snmp, "Tcp:", "OutRsts"),
        }
    }

    /// What grew from `before` to `self`.
    pub fn since(&self, before: &TcpCounters) -> TcpCounters {
        TcpCounters {
            listen_drops: self.listen_drops.saturating_sub(before.listen_drops),
            listen_overflows: self.listen_overflows.saturating_sub(before.listen_overflows),
            estab_resets: self.estab_resets.saturating_sub(before.estab_resets),
            out_rsts: self.out_rsts.saturating_sub(before.out_rsts),
        }
    }
}

impl fmt::Display for TcpCounters {
    /// `ListenDrops 0, ListenOverflows 0, EstabResets 3, OutRsts 5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ListenDrops {}, ListenOverflows {}, EstabResets {}, OutRsts {}",
            self.listen_drops, self.listen_overflows, self.estab_resets, self.out_rsts
        )
    }
}

/// The value of `name` in the table `prefix` of a `/proc/net/snmp`-style
/// text: a line of names, then a line of values, both starting with the
/// prefix.
fn field(text: &str, prefix: &str, name: &str) -> u64 {
    let mut rows = text.lines().filter(|l| l.split_whitespace().next() == Some(prefix));
    while let (Some(names), Some(values)) = (rows.next(), rows.next()) {
        let at = names.split_whitespace().position(|n| n == name);
        if let Some(v) = at.and_then(|i| values.split_whitespace().nth(i)) {
            return v.parse().unwrap_or(0);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETSTAT: &str = "\
TcpExt: SyncookiesSent EmbryonicRsts ListenOverflows ListenDrops TCPAbortOnClose
TcpExt: 0 4 17 19 2
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
MPTcpExt: ListenDrops ListenOverflows
MPTcpExt: 900 901
";
    const SNMP: &str = "\
Ip: Forwarding DefaultTTL
Ip: 1 64
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 549779 549683 72 6380 0 7089727 7084373 5448 0 5215 0
Udp: InDatagrams NoPorts
Udp: 5 6
";

    #[test]
    fn reads_the_counters_from_their_tables() {
        let c = TcpCounters::parse(NETSTAT, SNMP);
        assert_eq!(c, TcpCounters { listen_drops: 19, listen_overflows: 17, estab_resets: 6380, out_rsts: 5215 });
        assert_eq!(c.to_string(), "ListenDrops 19, ListenOverflows 17, EstabResets 6380, OutRsts 5215");
    }

    #[test]
    fn a_missing_table_or_name_reads_zero_and_differences_never_go_below_zero() {
        assert_eq!(TcpCounters::parse("", "Tcp: RtoAlgorithm\nTcp: 1\n"), TcpCounters::default());
        let before = TcpCounters { listen_drops: 5, listen_overflows: 5, estab_resets: 10, out_rsts: 3 };
        let after = TcpCounters { listen_drops: 7, listen_overflows: 5, estab_resets: 9, out_rsts: 30 };
        assert_eq!(
            after.since(&before),
            TcpCounters { listen_drops: 2, listen_overflows: 0, estab_resets: 0, out_rsts: 27 }
        );
    }
}
