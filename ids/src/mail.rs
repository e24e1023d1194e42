//! Mail as SMTP carries it, for `file.data` in `smtp` rules: the client's stream is read line
//! by line; after `DATA`, the message up to the line holding a single `.` (dot-stuffing
//! undone); the message's MIME parts that are attachments (a `filename` in
//! `Content-Disposition`, or a `name` in `Content-Type`), decoded from base64 or
//! quoted-printable, are the files Suricata 7's `file.data` inspects in SMTP.
//!
//! Everything is bounded: a command line is kept up to [`MAX_LINE`] bytes, a message up to the
//! size the caller gives (the rest of it is dropped, the message still ends at its `.`),
//! each attachment's decoded bytes up to the body limit, parts nest at most [`MAX_DEPTH`]
//! deep. The same bytes give the same messages however the stream is cut.

/// Bytes of a command line kept (RFC 5321 allows 512; longer lines are cut).
const MAX_LINE: usize = 4096;

/// Multipart levels read.
const MAX_DEPTH: usize = 8;

/// Reads an SMTP client's stream.
#[derive(Debug, Default)]
pub(crate) struct MailReader {
    /// The line in progress.
    line: Vec<u8>,
    /// Inside `DATA`.
    in_data: bool,
    /// The message so far (dot-stuffing undone).
    message: Vec<u8>,
}

impl MailReader {
    /// The next client bytes; the messages they complete.
    pub(crate) fn push(&mut self, bytes: &[u8], max_message: usize) -> Vec<Vec<u8>> {
        let mut done = Vec::new();
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            let room = if self.in_data {
                // A data line is kept whole until its end is seen (it may be the final dot).
                max_message.saturating_sub(self.message.len()).max(2) + 2
            } else {
                MAX_LINE
            };
            let keep = piece.len().min(room.saturating_sub(self.line.len()));
            self.line.extend_from_slice(&piece[..keep]);
            if piece.last() != Some(&b'\n') {
                continue;
            }
            let line = std::mem::take(&mut self.line);
            if self.in_data {
                if trim_eol(&line) == b"." {
                    self.in_data = false;
                    done.push(std::mem::take(&mut self.message));
                    continue;
                }
                let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
                let room = max_message.saturating_sub(self.message.len());
                self.message
                    .extend_from_slice(&unstuffed[..unstuffed.len().min(room)]);
            } else if trim_eol(&line).eq_ignore_ascii_case(b"DATA") {
                self.in_data = true;
            }
        }
        done
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The attachments of a message, decoded, each at most `limit` bytes.
pub(crate) fn attachments(message: &[u8], limit: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    entity(message, limit, 0, &mut out);
    out
}

/// The boundary of an HTTP request body that is `multipart/form-data` (its `Content-Type`).
pub(crate) fn form_boundary(content_type: &[u8]) -> Option<Vec<u8>> {
    value_of(content_type)
        .eq_ignore_ascii_case(b"multipart/form-data")
        .then(|| param(content_type, b"boundary"))
        .flatten()
}

/// The files of a `multipart/form-data` body: the parts whose `Content-Disposition` has a
/// `filename`, as sent (HTTP uploads carry no transfer encoding, and Suricata's HTTP parser
/// undoes none); form fields are no files. A body cut short gives its last part as far as
/// it goes.
pub(crate) fn form_files<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    parts(body, boundary)
        .into_iter()
        .filter_map(|part| {
            let (head, content) = split_head(part);
            Headers::parse(head)
                .get(b"content-disposition")
                .and_then(|d| param(d, b"filename"))
                .map(|_| content)
        })
        .collect()
}

/// One MIME entity: its headers, then a body that is parts or content.
fn entity(bytes: &[u8], limit: usize, depth: usize, out: &mut Vec<Vec<u8>>) {
    let (head, body) = split_head(bytes);
    let headers = Headers::parse(head);
    let content_type = headers.get(b"content-type");
    if let Some(ct) = content_type
        && value_of(ct).to_ascii_lowercase().starts_with(b"multipart/")
    {
        if let Some(boundary) = param(ct, b"boundary")
            && depth < MAX_DEPTH
        {
            for part in parts(body, &boundary) {
                entity(part, limit, depth + 1, out);
            }
        }
        return;
    }
    let named = headers
        .get(b"content-disposition")
        .and_then(|d| param(d, b"filename"))
        .or_else(|| content_type.and_then(|c| param(c, b"name")));
    if named.is_none() {
        return;
    }
    let encoding = headers
        .get(b"content-transfer-encoding")
        .map(|e| value_of(e).to_ascii_lowercase());
    let mut data = match encoding.as_deref() {
        Some(b"base64") => base64_rfc2045(body, limit),
        Some(b"quoted-printable") => quoted_printable(body, limit),
        _ => body.to_vec(),
    };
    data.truncate(limit);
    out.push(data);
}

/// Headers and body: the body starts after the first empty line.
fn split_head(bytes: &[u8]) -> (&[u8], &[u8]) {
    if bytes.starts_with(b"\r\n") {
        return (&[], &bytes[2..]);
    }
    if bytes.starts_with(b"\n") {
        return (&[], &bytes[1..]);
    }
    for (i, w) in bytes.windows(2).enumerate() {
        if w == b"\n\n" {
            return (&bytes[..i + 1], &bytes[i + 2..]);
        }
        if w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n') {
            return (&bytes[..i + 1], &bytes[i + 3..]);
        }
    }
    (bytes, &[])
}

/// Header fields, continuation lines unfolded; names lower-cased.
struct Headers(Vec<(Vec<u8>, Vec<u8>)>);

impl Headers {
    fn parse(head: &[u8]) -> Headers {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for line in head.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                if let Some((_, v)) = fields.last_mut() {
                    v.push(b' ');
                    v.extend_from_slice(line.trim_ascii());
                }
                continue;
            }
            if let Some(colon) = line.iter().position(|b| *b == b':') {
                fields.push((
                    line[..colon].trim_ascii().to_ascii_lowercase(),
                    line[colon + 1..].trim_ascii().to_vec(),
                ));
            }
        }
        Headers(fields)
    }

    fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// The value before its parameters.
fn value_of(field: &[u8]) -> &[u8] {
    field
        .split(|b| *b == b';')
        .next()
        .unwrap_or(field)
        .trim_ascii()
}

/// A parameter (`name=value` or `name="value"`) of a header value, by name.
fn param(field: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    for p in field.split(|b| *b == b';').skip(1) {
        let Some(eq) = p.iter().position(|b| *b == b'=') else {
            continue;
        };
        if !p[..eq].trim_ascii().eq_ignore_ascii_case(name) {
            continue;
        }
        let v = p[eq + 1..].trim_ascii();
        let v = v
            .strip_prefix(b"\"")
            .map(|v| v.strip_suffix(b"\"").unwrap_or(v))
            .unwrap_or(v);
        return (!v.is_empty()).then(|| v.to_vec());
    }
    None
}

/// The parts of a multipart body: between `--boundary` lines, up to `--boundary--`.
fn parts<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut at = 0;
    while at < body.len() {
        let end = body[at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(body.len(), |i| at + i + 1);
        let line = trim_eol(&body[at..end]);
        // A delimiter line is the boundary alone (trailing blanks allowed), or closing.
        if let Some(rest) = line
            .strip_prefix(delimiter.as_slice())
            .filter(|rest| rest.starts_with(b"--") || rest.trim_ascii().is_empty())
        {
            if let Some(s) = start {
                // The part ends before the line break that precedes the delimiter.
                let part = &body[s..at];
                let part = part.strip_suffix(b"\n").unwrap_or(part);
                out.push(part.strip_suffix(b"\r").unwrap_or(part));
            }
            if rest.starts_with(b"--") {
                return out;
            }
            start = Some(end);
        }
        at = end;
    }
    // A message cut short: its last part as far as it goes.
    if let Some(s) = start {
        out.push(&body[s..]);
    }
    out
}

/// Base64 as RFC 2045 has it in mail: characters outside the alphabet are skipped, `=` ends
/// the data.
fn base64_rfc2045(text: &[u8], limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity((text.len() / 4 * 3).min(limit));
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
            if out.len() >= limit {
                break;
            }
        }
    }
    out
}

/// Quoted-printable: `=XX` bytes, `=` at a line's end joins it to the next.
fn quoted_printable(text: &[u8], limit: usize) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(text.len().min(limit));
    let mut i = 0;
    while i < text.len() && out.len() < limit {
        if text[i] == b'=' {
            match (text.get(i + 1), text.get(i + 2)) {
                (Some(b'\r'), Some(b'\n')) => {
                    i += 3;
                    continue;
                }
                (Some(b'\n'), _) => {
                    i += 2;
                    continue;
                }
                (Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                    out.push((hex(h).unwrap_or(0) << 4 | hex(l).unwrap_or(0)) as u8);
                    i += 3;
                    continue;
                }
                _ => {}
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &[u8] = b"EHLO me\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\ndata\r\n\
From: a@b\r\nSubject: x\r\nContent-Type: multipart/mixed;\r\n boundary=\"XX\"\r\n\r\n\
preamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n..dot line\r\n\
--XX\r\nContent-Type: application/postscript; name=\"a.ps\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJSFQUy1BZG9i\r\nZSBsZWdhbCByZXN0b3Jl\r\n\
--XX\r\nContent-Disposition: attachment; filename=b.txt\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\nsoft=\r\nbreak =3D done\r\n--XX--\r\n\
.\r\nQUIT\r\n";

    #[test]
    fn messages_however_the_stream_is_cut() {
        for step in [1, 2, 7, 64, SESSION.len()] {
            let mut r = MailReader::default();
            let mut got = Vec::new();
            for c in SESSION.chunks(step) {
                got.extend(r.push(c, 1 << 20));
            }
            assert_eq!(got.len(), 1, "step {step}");
            let files = attachments(&got[0], 100);
            assert_eq!(
                files,
                [
                    b"%!PS-Adobe legal restore".to_vec(),
                    b"softbreak = done".to_vec()
                ],
                "step {step}"
            );
            // Dot-stuffing undone in the text part, which is no attachment.
            assert!(got[0].windows(10).any(|w| w == b"\r\n.dot lin"));
        }
    }

    #[test]
    fn bounds_hold() {
        let mut r = MailReader::default();
        let mut big = b"DATA\r\nContent-Type: text/plain; name=x\r\n\r\n".to_vec();
        big.extend(vec![b'a'; 5000]);
        big.extend(b"\r\n.\r\n");
        let got = r.push(&big, 100);
        assert_eq!(got.len(), 1);
        assert!(got[0].len() <= 100);
        // The attachment: the part of its body that was kept, at most the limit.
        assert!(attachments(&got[0], 10)[0].len() <= 10);
        // A command line without end costs at most MAX_LINE.
        let mut r = MailReader::default();
        r.push(&vec![b'x'; 100_000], 100);
        assert!(r.line.len() <= MAX_LINE);
        // Deep nesting stops.
        let mut m = Vec::new();
        for i in 0..20 {
            m.extend(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n").bytes(),
            );
        }
        m.extend(b"Content-Type: text/plain; name=deep\r\n\r\ndeep\r\n");
        assert!(attachments(&m, 100).is_empty());
    }

    #[test]
    fn single_part_attachments_and_plain_mail() {
        let m = b"Content-Disposition: attachment; filename=\"r.tar\"\r\n\r\nustar data";
        assert_eq!(attachments(m, 100), [b"ustar data".to_vec()]);
        let plain = b"Subject: hi\r\n\r\nno files here";
        assert!(attachments(plain, 100).is_empty());
        // LF-only line ends, and a message cut inside its last part.
        let m =
            b"Content-Type: multipart/mixed; boundary=q\n\n--q\nContent-Type: x/y; name=f\n\ncut";
        assert_eq!(attachments(m, 100), [b"cut".to_vec()]);
    }
}
