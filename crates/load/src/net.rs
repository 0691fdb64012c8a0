//! Operating-system plumbing: the descriptor limit, source-address spreading for client
//! sockets, and what this process costs (RSS, CPU time) read from `/proc`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::{TcpSocket, TcpStream};

/// Raises the soft limit on open files to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// Chooses a source address for each new client socket: 127.0.0.(first + k mod count) for a
/// loopback IPv4 target, so each address brings its own 28k ephemeral ports; nothing otherwise.
#[derive(Debug, Clone)]
pub struct Sources {
    addrs: Vec<Ipv4Addr>,
}

impl Sources {
    /// `count` addresses starting at 127.0.0.(2 + offset); none when `count` is 0 or the target
    /// is not IPv4 loopback. Addresses stay within 127.0.0.2–254.
    pub fn new(target: SocketAddr, count: u8, offset: u32) -> Self {
        let loopback = matches!(target.ip(), IpAddr::V4(ip) if ip.is_loopback());
        let addrs = if loopback && count > 0 {
            (0..u32::from(count))
                .map(|k| {
                    let last = 2 + (offset * u32::from(count) + k) % 253;
                    Ipv4Addr::new(127, 0, 0, last as u8)
                })
                .collect()
        } else {
            Vec::new()
        };
        Sources { addrs }
    }

    pub fn pick(&self, k: u64) -> Option<Ipv4Addr> {
        if self.addrs.is_empty() { None } else { Some(self.addrs[(k % self.addrs.len() as u64) as usize]) }
    }
}

/// Connects to `target`, bound to `source` first when given. `IP_BIND_ADDRESS_NO_PORT` defers
/// the port choice to `connect`, so ports are shared across destinations and binding many
/// sockets to one address neither slows down nor fails with `EADDRINUSE` (machine.md).
///
/// # Errors
/// Socket creation, bind or connect failures.
pub async fn connect(target: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(src) = source {
        setsockopt(&socket, sockopt::IpBindAddressNoPort, &true).map_err(io::Error::from)?;
        socket.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Resident set size of this process, in bytes (0 when `/proc` is unavailable).
pub fn rss_bytes() -> u64 {
    let page = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

/// User + system CPU time of this process, in seconds (0 when `/proc` is unavailable).
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the `(comm)`, which may contain spaces: utime and stime are 14th and 15th.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // CLK_TCK is 100 on Linux x86-64 and arm64.
    (ticks(11) + ticks(12)) / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread_over_loopback_only() {
        let lo: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let s = Sources::new(lo, 3, 0);
        let picked: Vec<_> = (0..4).map(|k| s.pick(k).unwrap().to_string()).collect();
        assert_eq!(picked, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.2"]);
        assert_eq!(Sources::new(lo, 3, 1).pick(0).unwrap().to_string(), "127.0.0.5");
        assert!(Sources::new(lo, 0, 0).pick(0).is_none());
        assert!(Sources::new("10.0.0.1:80".parse().unwrap(), 3, 0).pick(0).is_none());
        assert!((0..200).all(|k| Sources::new(lo, 200, 63).pick(k).unwrap().octets()[3] >= 2));
    }

    #[tokio::test]
    async fn connects_from_a_chosen_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let src = Ipv4Addr::new(127, 0, 0, 7);
        let client = connect(addr, Some(src)).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), IpAddr::V4(src));
        assert_eq!(client.local_addr().unwrap().ip(), IpAddr::V4(src));
        assert!(rss_bytes() > 0);
        assert!(raise_nofile_limit() > 0);
    }
}
