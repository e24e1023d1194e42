//! DNS over TCP: split the client's stream into messages (2-byte length prefix) and read
//! the query name of each, for `dns.query`.

/// Bytes of a message kept for parsing: the header and question of any real query fit.
const KEPT: usize = 512;

/// Splits one direction of a DNS-over-TCP stream into messages.
#[derive(Debug, Default)]
pub(crate) struct DnsFramer {
    /// Length prefix bytes read so far (0, or 1 with the high byte in `hi`).
    len_bytes: u8,
    hi: u8,
    /// Bytes of the current message still to come.
    remaining: usize,
    /// The kept start of the current message.
    kept: Vec<u8>,
}

impl DnsFramer {
    /// Feed stream bytes; calls `on_query` with the name of each complete query message.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], mut on_query: impl FnMut(Vec<u8>)) {
        while !bytes.is_empty() {
            if self.remaining == 0 {
                if self.len_bytes == 0 {
                    self.hi = bytes[0];
                    self.len_bytes = 1;
                    bytes = &bytes[1..];
                    continue;
                }
                self.remaining = usize::from(u16::from_be_bytes([self.hi, bytes[0]]));
                self.len_bytes = 0;
                bytes = &bytes[1..];
                self.kept.clear();
                if self.remaining == 0 {
                    continue;
                }
                continue;
            }
            let take = self.remaining.min(bytes.len());
            let keep = take.min(KEPT.saturating_sub(self.kept.len()));
            self.kept.extend_from_slice(&bytes[..keep]);
            self.remaining -= take;
            bytes = &bytes[take..];
            if self.remaining == 0 {
                if let Some(name) = query_name(&self.kept) {
                    on_query(name);
                }
                self.kept = Vec::new();
            }
        }
    }
}

/// The first question's name of a query message, dotted, without the final dot.
pub(crate) fn query_name(msg: &[u8]) -> Option<Vec<u8>> {
    if msg.len() < 12 {
        return None;
    }
    let is_response = msg[2] & 0x80 != 0;
    let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
    if is_response || qdcount == 0 {
        return None;
    }
    let mut name = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*msg.get(i)?);
        if len == 0 {
            break;
        }
        // Compression pointers and extended labels do not occur in a first question.
        if len > 63 {
            return None;
        }
        let label = msg.get(i + 1..i + 1 + len)?;
        if !name.is_empty() {
            name.push(b'.');
        }
        name.extend_from_slice(label);
        if name.len() > 255 {
            return None;
        }
        i += 1 + len;
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut framed = (m.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&m);
        framed
    }

    #[test]
    fn frames_and_names_in_any_split() {
        let mut stream = query("www.Example.com");
        stream.extend_from_slice(&query("evil.test"));
        for split in 1..stream.len() {
            let mut f = DnsFramer::default();
            let mut names = Vec::new();
            for chunk in stream.chunks(split) {
                f.feed(chunk, |n| names.push(String::from_utf8(n).unwrap()));
            }
            assert_eq!(names, ["www.Example.com", "evil.test"], "split {split}");
        }
    }

    #[test]
    fn rejects_bad_messages() {
        assert_eq!(query_name(&[0; 5]), None);
        let mut resp = query("a.b")[2..].to_vec();
        resp[2] |= 0x80;
        assert_eq!(query_name(&resp), None);
        let mut ptr = query("a.b")[2..].to_vec();
        ptr[12] = 0xc0;
        assert_eq!(query_name(&ptr), None);
        let truncated = &query("abc.def")[2..16];
        assert_eq!(query_name(truncated), None);
    }
}
