//! Spoofing attempts. Capture drops TCP and UDP whose source address the arriving workload
//! interface does not route back to (a workload using another's address) and counts every
//! such packet ([`dropped`]); it also adds (interface, source, destination, port) to a set
//! with a timeout, at most [`nft::SPOOF_RECORDS_PER_SEC`] new entries a second. [`list`]
//! reads the sets, and the capture entry point records one flow per new entry, so each
//! attempt is recorded at most once per [`nft::SPOOF_MEMORY_SECS`] and a flood costs a bounded
//! number of records. Both are read over netlink in the node's process ([`super::nfnl`]).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::nfnl::{self, FAMILY_INET};
use super::nft::{self, Fam};

/// One dropped spoofing attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attempt {
    /// The workload interface it came from.
    pub interface: String,
    /// The address it claimed.
    pub src: IpAddr,
    /// Where it was going.
    pub dst: SocketAddr,
}

/// The attempts in the node's spoofing sets now (both families).
pub fn list(table: &str) -> anyhow::Result<HashSet<Attempt>> {
    let mut out = HashSet::new();
    for fam in [Fam::V4, Fam::V6] {
        let keys = nfnl::set_keys(FAMILY_INET, table, nft::spoof_set(fam))?;
        out.extend(keys.iter().filter_map(|k| attempt(fam, k)));
    }
    Ok(out)
}

/// Packets dropped for a spoofed source since the table was (re)installed.
pub fn dropped(table: &str) -> anyhow::Result<u64> {
    Ok(nfnl::counter_packets(
        FAMILY_INET,
        table,
        nft::SPOOF_COUNTER,
    )?)
}

/// Width of an interface name in a set key (`IFNAMSIZ`).
const IFNAME_LEN: usize = 16;

/// Reads a key of a spoofing set (`ifname . saddr . daddr . inet_service`, each part padded
/// to 4 bytes, as the kernel stores concatenations); `None` for a key of another shape.
fn attempt(fam: Fam, key: &[u8]) -> Option<Attempt> {
    let addr_len = match fam {
        Fam::V4 => 4,
        Fam::V6 => 16,
    };
    if key.len() != IFNAME_LEN + 2 * addr_len + 4 {
        return None;
    }
    let (name, rest) = key.split_at(IFNAME_LEN);
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(IFNAME_LEN)];
    let interface = std::str::from_utf8(name).ok()?.to_owned();
    let (src, rest) = rest.split_at(addr_len);
    let (dst, port) = rest.split_at(addr_len);
    let addr = |b: &[u8]| -> Option<IpAddr> {
        Some(match fam {
            Fam::V4 => Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?).into(),
            Fam::V6 => Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?).into(),
        })
    };
    Some(Attempt {
        interface,
        src: addr(src)?,
        dst: SocketAddr::new(addr(dst)?, u16::from_be_bytes([port[0], port[1]])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, src: &[u8], dst: &[u8], port: u16) -> Vec<u8> {
        let mut k = name.as_bytes().to_vec();
        k.resize(IFNAME_LEN, 0);
        k.extend_from_slice(src);
        k.extend_from_slice(dst);
        k.extend_from_slice(&port.to_be_bytes());
        k.extend_from_slice(&[0, 0]);
        k
    }

    #[test]
    fn set_keys_are_read_as_the_kernel_lays_them_out() {
        let k = key("w1", &[10, 77, 1, 3], &[10, 77, 2, 2], 5432);
        assert_eq!(
            attempt(Fam::V4, &k),
            Some(Attempt {
                interface: "w1".into(),
                src: "10.77.1.3".parse().unwrap(),
                dst: "10.77.2.2:5432".parse().unwrap()
            })
        );
        let (s6, d6): (Ipv6Addr, Ipv6Addr) =
            ("fd00::3".parse().unwrap(), "fd00:1::2".parse().unwrap());
        let k = key("veth-app", &s6.octets(), &d6.octets(), 53);
        let a = attempt(Fam::V6, &k).unwrap();
        assert_eq!(
            (a.interface.as_str(), a.src, a.dst),
            ("veth-app", s6.into(), SocketAddr::new(d6.into(), 53))
        );
        // A full-width name has no NUL.
        let k = key("abcdefghijklmnop", &[1, 2, 3, 4], &[5, 6, 7, 8], 1);
        assert_eq!(attempt(Fam::V4, &k).unwrap().interface, "abcdefghijklmnop");
    }

    #[test]
    fn keys_of_another_shape_are_skipped() {
        let k = key("w1", &[10, 77, 1, 3], &[10, 77, 2, 2], 5432);
        assert_eq!(attempt(Fam::V6, &k), None);
        assert_eq!(attempt(Fam::V4, &k[..k.len() - 1]), None);
        assert_eq!(attempt(Fam::V4, &[]), None);
        let mut bad = k.clone();
        bad[0] = 0xff; // not UTF-8
        assert_eq!(attempt(Fam::V4, &bad), None);
    }
}
