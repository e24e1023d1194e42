//! Reading the node's own nf_tables objects (a named counter, a set's elements) over
//! netlink, in the node's process. The `nft` tool would do the same, but as a process: a fork,
//! an exec and a dozen shared libraries each time, several milliseconds of CPU that stalled
//! the data path on a small host when done every second (measured: `scripts/bench.sh
//! --only-many`, docs/BENCHMARKS.md). Rules are still written with `nft` (rarely: at start and
//! on reload). The message layouts are the kernel's (`include/uapi/linux/netfilter/
//! nf_tables.h`); requests are built and answers read by the pure functions below.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use netlink_packet_core::{
    NLA_TYPE_MASK, NLM_F_ACK, NLM_F_DUMP, NLM_F_MULTIPART, NLM_F_REQUEST, NetlinkBuffer,
    NlasIterator,
};
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

/// `NFNL_SUBSYS_NFTABLES`: the high byte of every nf_tables message type.
const SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_NEWOBJ: u16 = 18;
const NFT_MSG_GETOBJ: u16 = 19;
/// `NFPROTO_INET`: the node's table is an `inet` table.
pub(crate) const FAMILY_INET: u8 = 1;
const NFT_OBJECT_COUNTER: u32 = 1;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// nfgenmsg: family, version (`NFNETLINK_V0`), resource id.
const NFGENMSG_LEN: usize = 4;

// Attributes (`enum nft_object_attributes`, `nft_counter_attributes`,
// `nft_set_elem_list_attributes`, `nft_list_attributes`, `nft_set_elem_attributes`,
// `nft_data_attributes`).
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;

/// How long the kernel may take to answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the messages of one answer (a set of 65,536 elements is a few hundred).
const MAX_MESSAGES: usize = 100_000;

static SEQUENCE: AtomicU32 = AtomicU32::new(1);

/// The packets counted so far by the named counter `name` of table `table` (`family`).
pub(crate) fn counter_packets(family: u8, table: &str, name: &str) -> io::Result<u64> {
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let request = get_counter_request(family, table, name, seq);
    let mut packets = None;
    exchange(&request, seq, |msg_type, payload| {
        if msg_type == nft_type(NFT_MSG_NEWOBJ) {
            packets = Some(parse_counter(payload)?);
        }
        Ok(())
    })?;
    packets.ok_or_else(|| malformed(format!("no counter `{name}` in the answer")))
}

/// The keys of the elements of set `set` of table `table` (`family`), each as the kernel
/// stores it (a concatenation: each part padded to 4 bytes).
pub(crate) fn set_keys(family: u8, table: &str, set: &str) -> io::Result<Vec<Vec<u8>>> {
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let request = get_set_elements_request(family, table, set, seq);
    let mut keys = Vec::new();
    exchange(&request, seq, |msg_type, payload| {
        if msg_type == nft_type(NFT_MSG_NEWSETELEM) {
            keys.extend(parse_set_keys(payload)?);
        }
        Ok(())
    })?;
    Ok(keys)
}

fn nft_type(msg: u16) -> u16 {
    (SUBSYS_NFTABLES << 8) | msg
}

fn malformed(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Sends `request` and hands each answer message of sequence `seq` to `each` (type and the
/// payload after nfgenmsg) until the answer ends: the ACK of a request, the DONE of a dump,
/// or an error (returned).
fn exchange(
    request: &[u8],
    seq: u32,
    mut each: impl FnMut(u16, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    socket.set_rx_buf_sz(1 << 20)?;
    let tv = nix::sys::time::TimeVal::new(TIMEOUT.as_secs() as _, TIMEOUT.subsec_micros() as _);
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .map_err(io::Error::from)?;
    socket.send(request, 0)?;
    // On the stack: a heap buffer this size would be returned to the allocator, and purged,
    // after every read.
    let mut buf = [0u8; 64 * 1024];
    for _ in 0..MAX_MESSAGES {
        // MSG_TRUNC: the real length of a datagram that did not fit, so it is never half-read.
        let len = match socket.recv(&mut &mut buf[..], libc::MSG_TRUNC) {
            Ok(n) if n > buf.len() => {
                return Err(malformed(format!("an answer datagram of {n} bytes")));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        match read_datagram(&buf[..len], seq, &mut each)? {
            Step::More => continue,
            Step::Done => return Ok(()),
        }
    }
    Err(malformed(format!(
        "more than {MAX_MESSAGES} answer datagrams"
    )))
}

/// Whether an answer goes on after a datagram.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    More,
    Done,
}

/// Reads the messages of one datagram: answers to `seq` go to `each`; the answer ends with
/// DONE, an ACK (an error message with code 0) or a non-multipart reply; an error message with
/// a code is the kernel's refusal.
fn read_datagram(
    datagram: &[u8],
    seq: u32,
    each: &mut impl FnMut(u16, &[u8]) -> io::Result<()>,
) -> io::Result<Step> {
    let mut rest = datagram;
    let mut step = Step::More;
    while !rest.is_empty() {
        let msg = NetlinkBuffer::new_checked(rest).map_err(|e| malformed(e.to_string()))?;
        let len = (msg.length() as usize).max(16);
        let aligned = len.div_ceil(4) * 4;
        let (msg_type, flags, payload) = (msg.message_type(), msg.flags(), msg.payload());
        let mine = msg.sequence_number() == seq;
        rest = rest.get(aligned..).unwrap_or_default();
        if !mine {
            continue;
        }
        match msg_type {
            NLMSG_DONE => return Ok(Step::Done),
            NLMSG_ERROR => {
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or_else(|| malformed("short netlink error message".into()))?;
                if code == 0 {
                    return Ok(Step::Done);
                }
                return Err(io::Error::from_raw_os_error(-code));
            }
            _ => {
                let body = payload
                    .get(NFGENMSG_LEN..)
                    .ok_or_else(|| malformed("nf_tables message without nfgenmsg".into()))?;
                each(msg_type, body)?;
                if flags & NLM_F_MULTIPART == 0 {
                    // A single reply (not a dump); its ACK may follow, nothing else.
                    step = Step::Done;
                }
            }
        }
    }
    Ok(step)
}

/// One netlink message: header, nfgenmsg, then `attrs` (type, value) in order.
fn message(msg: u16, flags: u16, seq: u32, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = vec![0u8; 16];
    out.extend_from_slice(&[family, 0, 0, 0]);
    for (kind, value) in attrs {
        let len = 4 + value.len();
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().div_ceil(4) * 4, 0);
    }
    let total = out.len() as u32;
    out[0..4].copy_from_slice(&total.to_ne_bytes());
    out[4..6].copy_from_slice(&nft_type(msg).to_ne_bytes());
    out[6..8].copy_from_slice(&flags.to_ne_bytes());
    out[8..12].copy_from_slice(&seq.to_ne_bytes());
    out
}

/// A NUL-terminated string attribute value.
fn c_string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn get_counter_request(family: u8, table: &str, name: &str, seq: u32) -> Vec<u8> {
    message(
        NFT_MSG_GETOBJ,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        family,
        &[
            (NFTA_OBJ_TABLE, &c_string(table)),
            (NFTA_OBJ_NAME, &c_string(name)),
            (NFTA_OBJ_TYPE, &NFT_OBJECT_COUNTER.to_be_bytes()),
        ],
    )
}

fn get_set_elements_request(family: u8, table: &str, set: &str, seq: u32) -> Vec<u8> {
    message(
        NFT_MSG_GETSETELEM,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        family,
        &[
            (NFTA_SET_ELEM_LIST_TABLE, &c_string(table)),
            (NFTA_SET_ELEM_LIST_SET, &c_string(set)),
        ],
    )
}

/// The attributes of `buf` as (type without flags, value).
fn attributes(buf: &[u8]) -> impl Iterator<Item = io::Result<(u16, &[u8])>> {
    NlasIterator::new(buf).map(|nla| {
        let nla = nla.map_err(|e| malformed(e.to_string()))?;
        let (kind, len) = (nla.kind() & NLA_TYPE_MASK, nla.length() as usize);
        // `new_checked` made sure 4 <= len <= the buffer's length.
        let value = nla.into_inner().get(4..len).unwrap_or_default();
        Ok((kind, value))
    })
}

/// The first attribute of type `kind` in `buf`.
fn find(buf: &[u8], kind: u16) -> io::Result<Option<&[u8]>> {
    for a in attributes(buf) {
        let (k, v) = a?;
        if k == kind {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// The packets of an NFT_MSG_NEWOBJ counter message.
fn parse_counter(body: &[u8]) -> io::Result<u64> {
    let data = find(body, NFTA_OBJ_DATA)?.ok_or_else(|| malformed("object without data".into()))?;
    let packets = find(data, NFTA_COUNTER_PACKETS)?
        .ok_or_else(|| malformed("counter without packets".into()))?;
    let b: [u8; 8] = packets
        .try_into()
        .map_err(|_| malformed(format!("counter packets of {} bytes", packets.len())))?;
    Ok(u64::from_be_bytes(b))
}

/// The element keys of an NFT_MSG_NEWSETELEM message.
fn parse_set_keys(body: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    let Some(elements) = find(body, NFTA_SET_ELEM_LIST_ELEMENTS)? else {
        return Ok(keys);
    };
    for a in attributes(elements) {
        let (kind, elem) = a?;
        if kind != NFTA_LIST_ELEM {
            continue;
        }
        let Some(key) = find(elem, NFTA_SET_ELEM_KEY)? else {
            continue;
        };
        if let Some(value) = find(key, NFTA_DATA_VALUE)? {
            keys.push(value.to_vec());
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::NLA_F_NESTED as NESTED;

    use super::*;

    /// An attribute (type, value), padded.
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        v.resize(v.len().div_ceil(4) * 4, 0);
        v
    }

    /// A whole answer message as the kernel writes it.
    fn answer(msg_type: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 16];
        v.extend_from_slice(&[FAMILY_INET, 0, 0, 0]);
        v.extend_from_slice(body);
        let len = v.len() as u32;
        v[0..4].copy_from_slice(&len.to_ne_bytes());
        v[4..6].copy_from_slice(&msg_type.to_ne_bytes());
        v[6..8].copy_from_slice(&flags.to_ne_bytes());
        v[8..12].copy_from_slice(&seq.to_ne_bytes());
        v
    }

    fn error(seq: u32, code: i32) -> Vec<u8> {
        let mut v = vec![0u8; 16];
        v.extend_from_slice(&code.to_ne_bytes());
        v.extend_from_slice(&[0u8; 16]);
        let len = v.len() as u32;
        v[0..4].copy_from_slice(&len.to_ne_bytes());
        v[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        v[8..12].copy_from_slice(&seq.to_ne_bytes());
        v
    }

    #[test]
    fn the_counter_request_names_table_counter_and_type() {
        let r = get_counter_request(FAMILY_INET, "eastwall", "spoofed", 7);
        let b = NetlinkBuffer::new_checked(&r[..]).unwrap();
        assert_eq!(b.length() as usize, r.len());
        assert_eq!(b.message_type(), (10 << 8) | 19);
        assert_eq!(b.flags(), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(b.sequence_number(), 7);
        let body = &b.payload()[NFGENMSG_LEN..];
        assert_eq!(b.payload()[0], FAMILY_INET);
        let attrs: Vec<(u16, Vec<u8>)> = attributes(body)
            .map(|a| a.map(|(k, v)| (k, v.to_vec())))
            .collect::<io::Result<_>>()
            .unwrap();
        assert_eq!(
            attrs,
            vec![
                (NFTA_OBJ_TABLE, b"eastwall\0".to_vec()),
                (NFTA_OBJ_NAME, b"spoofed\0".to_vec()),
                (NFTA_OBJ_TYPE, vec![0, 0, 0, 1]),
            ]
        );
    }

    #[test]
    fn a_set_dump_is_a_dump() {
        let r = get_set_elements_request(FAMILY_INET, "eastwall", "spoofed4", 9);
        let b = NetlinkBuffer::new_checked(&r[..]).unwrap();
        assert_eq!(b.message_type(), (10 << 8) | 13);
        assert_eq!(b.flags(), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(
            find(&b.payload()[NFGENMSG_LEN..], NFTA_SET_ELEM_LIST_SET).unwrap(),
            Some(&b"spoofed4\0"[..])
        );
    }

    #[test]
    fn counter_answers_are_read_and_refusals_are_errors() {
        let data = [
            nla(1, &560_000u64.to_be_bytes()),
            nla(NFTA_COUNTER_PACKETS, &20_000u64.to_be_bytes()),
        ]
        .concat();
        let body = [
            nla(NFTA_OBJ_TABLE, b"eastwall\0"),
            nla(NFTA_OBJ_DATA | NESTED, &data),
        ]
        .concat();
        let mut datagram = answer(nft_type(NFT_MSG_NEWOBJ), 0, 5, &body);
        datagram.extend(error(5, 0));
        let mut got = Vec::new();
        let step = read_datagram(&datagram, 5, &mut |t, p| {
            assert_eq!(t, nft_type(NFT_MSG_NEWOBJ));
            got.push(parse_counter(p)?);
            Ok(())
        })
        .unwrap();
        assert_eq!((step, got), (Step::Done, vec![20_000]));

        // Another request's answer is skipped; a refusal (no such table) is its errno.
        let mut datagram = answer(nft_type(NFT_MSG_NEWOBJ), 0, 4, &body);
        datagram.extend(error(5, -(nix::errno::Errno::ENOENT as i32)));
        let e = read_datagram(&datagram, 5, &mut |_, _| panic!("not ours")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");

        // Truncated or wrong-sized values are errors, never a panic.
        assert!(parse_counter(&nla(NFTA_OBJ_DATA | NESTED, &nla(2, &[1, 2]))).is_err());
        assert!(parse_counter(&[]).is_err());
        assert!(read_datagram(&datagram[..10], 5, &mut |_, _| Ok(())).is_err());
    }

    #[test]
    fn set_element_keys_come_out_of_a_multipart_dump() {
        let key = |k: &[u8]| {
            nla(
                NFTA_LIST_ELEM | NESTED,
                &[
                    nla(NFTA_SET_ELEM_KEY | NESTED, &nla(NFTA_DATA_VALUE, k)),
                    nla(5, &60_000u64.to_be_bytes()),
                ]
                .concat(),
            )
        };
        let elements = [key(&[1; 28]), key(&[2; 28])].concat();
        let body = [
            nla(NFTA_SET_ELEM_LIST_TABLE, b"eastwall\0"),
            nla(NFTA_SET_ELEM_LIST_SET, b"spoofed4\0"),
            nla(NFTA_SET_ELEM_LIST_ELEMENTS | NESTED, &elements),
        ]
        .concat();
        let part = answer(nft_type(NFT_MSG_NEWSETELEM), NLM_F_MULTIPART, 3, &body);
        let mut keys = Vec::new();
        let mut each = |t: u16, p: &[u8]| {
            if t == nft_type(NFT_MSG_NEWSETELEM) {
                keys.extend(parse_set_keys(p)?);
            }
            Ok(())
        };
        assert_eq!(read_datagram(&part, 3, &mut each).unwrap(), Step::More);
        let done = answer(NLMSG_DONE, NLM_F_MULTIPART, 3, &[0; 4]);
        assert_eq!(read_datagram(&done, 3, &mut each).unwrap(), Step::Done);
        assert_eq!(keys, vec![vec![1u8; 28], vec![2u8; 28]]);
    }
}
