//! The facts of an IP packet that a new flow is decided on: its addresses, its protocol, and
//! its ports (TCP, UDP, SCTP) or ICMP type and code. Used for the protocols the node does
//! not proxy, whose first packet the kernel queues to it. IPv4 and IPv6 (extension headers
//! followed); a fragment other than the first has no ports.

use std::net::IpAddr;

/// What a packet says about its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketFacts {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number (of the payload, past IPv6 extension headers).
    pub protocol: u8,
    /// Source and destination ports (TCP, UDP, SCTP, UDP-Lite), when the packet holds them.
    pub ports: Option<(u16, u16)>,
    /// ICMP or ICMPv6 type and code.
    pub icmp: Option<(u8, u8)>,
}

/// Why a packet could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Not a well-formed IPv4 or IPv6 packet.
    #[error("not a well-formed IP packet: {0}")]
    Malformed(String),
}

/// Protocols whose first four payload bytes are the source and destination ports.
const WITH_PORTS: [u8; 4] = [6, 17, 132, 136];
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Reads the facts of `packet` (starting at its IP header).
pub fn parse(packet: &[u8]) -> Result<PacketFacts, PacketError> {
    let ip = etherparse::IpSlice::from_slice(packet)
        .map_err(|e| PacketError::Malformed(e.to_string()))?;
    let payload = ip.payload();
    let protocol = payload.ip_number.0;
    // Only the first fragment carries the transport header.
    let first = !payload.fragmented || is_first_fragment(&ip);
    let bytes = payload.payload;
    let ports = (first && WITH_PORTS.contains(&protocol) && bytes.len() >= 4).then(|| {
        (
            u16::from_be_bytes([bytes[0], bytes[1]]),
            u16::from_be_bytes([bytes[2], bytes[3]]),
        )
    });
    let icmp = (first && (protocol == ICMP || protocol == ICMPV6) && bytes.len() >= 2)
        .then(|| (bytes[0], bytes[1]));
    Ok(PacketFacts {
        src: ip.source_addr(),
        dst: ip.destination_addr(),
        protocol,
        ports,
        icmp,
    })
}

/// Whether a fragmented packet is the first fragment (offset 0), whose payload starts with
/// the transport header. IPv6 fragments are not told apart: none gets ports.
fn is_first_fragment(ip: &etherparse::IpSlice<'_>) -> bool {
    match ip {
        etherparse::IpSlice::Ipv4(v4) => v4.header().fragments_offset().value() == 0,
        etherparse::IpSlice::Ipv6(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    #[test]
    fn icmp_echo_and_udp_and_gre() {
        let mut out = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut out, b"ping")
            .unwrap();
        let f = parse(&out).unwrap();
        assert_eq!(f.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((f.protocol, f.icmp, f.ports), (1, Some((8, 0)), None));

        let mut out = Vec::new();
        PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
            .icmpv6_echo_request(7, 1)
            .write(&mut out, b"ping")
            .unwrap();
        let f = parse(&out).unwrap();
        assert_eq!((f.protocol, f.icmp), (58, Some((128, 0))));

        let mut out = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(4000, 53)
            .write(&mut out, b"q")
            .unwrap();
        assert_eq!(parse(&out).unwrap().ports, Some((4000, 53)));

        // GRE (47): an IPv4 header with protocol 47 and a few payload bytes.
        let mut gre = vec![
            0x45, 0, 0, 24, 0, 0, 0, 0, 64, 47, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 0x08, 0,
        ];
        let sum = checksum(&gre[..20]);
        gre[10..12].copy_from_slice(&sum.to_be_bytes());
        let f = parse(&gre).unwrap();
        assert_eq!((f.protocol, f.ports, f.icmp), (47, None, None));
    }

    fn checksum(h: &[u8]) -> u16 {
        let mut sum: u32 = h
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&[][..], &[0x45][..], &[0x60, 0, 0][..], &[0xff; 40][..]] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
