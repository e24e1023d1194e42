//! HTTP bodies decoded before inspection, as Suricata 7 (libhtp) does: the content codings
//! `gzip`, `x-gzip`, `deflate` and `x-deflate`, on requests and responses, up to
//! [`MAX_LAYERS`] of them, streaming, and bounded by the body's inspection limit.
//!
//! Decoding is permissive, as a lenient server or browser is and as libhtp's restarts are:
//! what the bytes are decides, not the label (a `gzip` body that is zlib or raw deflate, a
//! `deflate` body that is gzip, zlib with or without its header); a body that is not
//! compressed at all is inspected as sent; a stream that breaks after some output keeps that
//! output and the rest is inspected as sent; a truncated stream keeps what it decoded.
//! However the body is cut into chunks, the decoded bytes are the same.

use flate2::{Decompress, FlushDecompress, Status};

/// Content codings undone at most (Suricata's `decompression-layer-limit` is 2).
pub(crate) const MAX_LAYERS: usize = 2;

/// Decoded bytes per compressed byte (over all layers) beyond which a body cut at its
/// inspection limit is a decompression bomb (deflate reaches about 1,030 on one layer;
/// ordinary content 3 to 20).
pub(crate) const BOMB_RATIO: u64 = 500;

/// Bytes a layer may produce beyond what the inspection still takes: the next layer needs at
/// most that much more input than it outputs (deflate's stored blocks cost 5 bytes per 64 KiB).
const SLACK: usize = 4096;

/// Longest gzip header read (its optional name and comment fields are unbounded).
const MAX_GZIP_HEADER: usize = 4096;

/// What decoding a body noticed, for the node's events and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeEvent {
    /// Decoding stopped at the inspection limit with more than [`BOMB_RATIO`] decoded
    /// bytes per compressed byte.
    CompressionBomb {
        /// Compressed bytes consumed.
        compressed: u64,
        /// Bytes decoded (the inspection limit).
        decoded: u64,
    },
    /// More content codings than [`MAX_LAYERS`]: the outer ones stay encoded.
    TooManyEncodingLayers,
}

impl DecodeEvent {
    /// Suricata's name of the event (EVE `anomaly.event`).
    pub fn name(self) -> &'static str {
        match self {
            DecodeEvent::CompressionBomb { .. } => "COMPRESSION_BOMB",
            DecodeEvent::TooManyEncodingLayers => "TOO_MANY_ENCODING_LAYERS",
        }
    }
}

/// The content codings a body's `Content-Encoding` header values ask to undo, in the order
/// they are undone (the last applied first), and whether there were more than
/// [`MAX_LAYERS`]. `identity` is nothing; a coding this does not decode (`br`, `compress`,
/// `zstd`, unknown names) stops decoding there: the body is inspected as it then is.
pub(crate) fn codings<'a>(values: impl Iterator<Item = &'a [u8]>) -> (usize, bool) {
    let mut names: Vec<Vec<u8>> = Vec::new();
    for v in values {
        for t in v.split(|b| *b == b',') {
            let t = t.trim_ascii();
            if !t.is_empty() {
                names.push(t.to_ascii_lowercase());
            }
        }
    }
    let mut layers = 0;
    for n in names.iter().rev() {
        match n.as_slice() {
            b"identity" => {}
            b"gzip" | b"x-gzip" | b"deflate" | b"x-deflate" => layers += 1,
            _ => break,
        }
    }
    (layers.min(MAX_LAYERS), layers > MAX_LAYERS)
}

/// A body's decoder: its layers, outermost (undone first) first.
#[derive(Debug)]
pub(crate) struct BodyDecoder {
    layers: Vec<Layer>,
    /// Decoded bytes handed out.
    decoded: u64,
}

/// Decoded bytes of one chunk.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// The bytes, at most the room given.
    pub bytes: Vec<u8>,
    /// Decoding stopped at the room given, a bomb by its ratio.
    pub bomb: Option<DecodeEvent>,
}

impl BodyDecoder {
    /// A decoder undoing `layers` codings (at least one).
    pub(crate) fn new(layers: usize) -> BodyDecoder {
        BodyDecoder {
            layers: (0..layers.max(1)).map(|_| Layer::new()).collect(),
            decoded: 0,
        }
    }

    /// The next chunk of the body as sent, `end` on the last one; at most `room` decoded
    /// bytes come out (the rest of the body is not decoded).
    pub(crate) fn push(&mut self, chunk: &[u8], end: bool, room: usize) -> Decoded {
        let mut out = Decoded::default();
        if room == 0 {
            return out;
        }
        let mut data = chunk.to_vec();
        for layer in &mut self.layers {
            data = layer.push(&data, end, room.saturating_add(SLACK));
        }
        data.truncate(room);
        self.decoded += data.len() as u64;
        if data.len() >= room {
            // Stopped at the limit: by how much each layer multiplied what it read.
            let ratio: f64 = self
                .layers
                .iter()
                .map(|l| l.produced as f64 / l.used.max(1) as f64)
                .product();
            if ratio >= BOMB_RATIO as f64 {
                out.bomb = Some(DecodeEvent::CompressionBomb {
                    compressed: self.layers.first().map_or(0, |l| l.used as u64),
                    decoded: self.decoded,
                });
            }
        }
        out.bytes = data;
        out
    }
}

/// One content coding being undone.
///
/// Until [`SETTLE`] input bytes have been read without error, a layer's reading is only a
/// guess: its output is held, and a failure restarts it on everything it was given with the
/// next reading (zlib → raw deflate → as sent). Past that, the reading stands: a failure
/// keeps what was decoded and passes the rest as sent, and bytes after the stream's end are
/// ignored. Every decision depends on the bytes alone, never on how they were cut.
struct Layer {
    state: State,
    /// Everything given, while the reading is a guess.
    given: Vec<u8>,
    /// Bytes given to this layer.
    fed: usize,
    /// Readings still to try after the current one fails (the last is tried first).
    fallbacks: Vec<Framing>,
    /// Output of a guess, held until it stands.
    held: Vec<u8>,
    /// The reading stands.
    settled: bool,
    /// Input bytes read (all given, unless the output reached its cap first).
    used: usize,
    /// Bytes output.
    produced: usize,
}

/// Input bytes read without error after which a layer's reading stands.
const SETTLE: usize = 4096;

/// What a layer is doing.
enum State {
    /// Fewer than two bytes seen: not yet known what they are (`true`: after a gzip member,
    /// where only another member is read).
    Sniff(Vec<u8>, bool),
    /// A gzip member's header being read.
    GzipHeader(Vec<u8>),
    /// Inflating.
    Inflate(Box<Decompress>, Framing),
    /// A gzip member's trailer (CRC and size, not checked, as lenient clients do), then
    /// maybe another member.
    GzipTrailer(usize),
    /// The stream, read with this framing, ended.
    Done(Framing),
    /// Not compressed, or broken: bytes go through as they are.
    Through,
}

/// Which deflate framing an inflater reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Gzip,
    Zlib,
    Raw,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Sniff(..) => "sniff",
            State::GzipHeader(_) => "gzip header",
            State::Inflate(_, Framing::Gzip) => "gzip",
            State::Inflate(_, Framing::Zlib) => "zlib",
            State::Inflate(_, Framing::Raw) => "deflate",
            State::GzipTrailer(_) => "gzip trailer",
            State::Done(_) => "done",
            State::Through => "as sent",
        };
        write!(
            f,
            "Layer({state}, fed {}, settled {})",
            self.fed, self.settled
        )
    }
}

/// Whether `b` starts a zlib stream (RFC 1950: deflate, a window of at most 32 KiB, the
/// header's check bits).
fn is_zlib(b: &[u8]) -> bool {
    b.len() >= 2
        && b[0] & 0x0f == 8
        && b[0] >> 4 <= 7
        && (u16::from(b[0]) << 8 | u16::from(b[1])) % 31 == 0
}

/// The length of the gzip header `b` starts with; `Ok(None)`: more bytes needed; `Err`: not
/// a header this reads.
fn gzip_header_len(b: &[u8]) -> Result<Option<usize>, ()> {
    if b.len() < 10 {
        return Ok(None);
    }
    if b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 {
        return Err(());
    }
    let flags = b[3];
    let mut at = 10;
    if flags & 0x04 != 0 {
        let Some(x) = b.get(at..at + 2) else {
            return Ok(None);
        };
        at += 2 + usize::from(u16::from_le_bytes([x[0], x[1]]));
    }
    for bit in [0x08, 0x10] {
        if flags & bit != 0 {
            match b.get(at..).and_then(|r| r.iter().position(|c| *c == 0)) {
                Some(nul) => at += nul + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 0x02 != 0 {
        at += 2;
    }
    Ok((at <= b.len()).then_some(at))
}

impl Layer {
    fn new() -> Layer {
        Layer {
            state: State::Sniff(Vec::new(), false),
            given: Vec::new(),
            fed: 0,
            fallbacks: Vec::new(),
            held: Vec::new(),
            settled: false,
            used: 0,
            produced: 0,
        }
    }

    /// Bytes of this layer's input in, its output out (at most about `cap`).
    fn push(&mut self, input: &[u8], end: bool, cap: usize) -> Vec<u8> {
        let start = self.fed;
        self.fed += input.len();
        if !self.settled {
            self.given.extend_from_slice(input);
        }
        let mut out = std::mem::take(&mut self.held);
        self.used = self.fed;
        let mut result = self.run(input.to_vec(), start, end, cap, &mut out);
        loop {
            let (at, rest) = match result {
                Err(failed) => failed,
                // A guess of zlib or deflate still unfinished when a short body ends: plain
                // data that had not yet hit an invalid code.
                Ok(())
                    if end
                        && !self.settled
                        && self.fed < SETTLE
                        && out.len() < cap
                        && matches!(
                            self.state,
                            State::Inflate(_, Framing::Zlib | Framing::Raw)
                        ) =>
                {
                    (0, Vec::new())
                }
                Ok(()) => break,
            };
            if at >= SETTLE {
                // Broken once the reading stood: the rest as sent.
                self.state = State::Through;
                result = self.run(rest, at, end, cap, &mut out);
            } else {
                // The guess was wrong: the next reading of everything given.
                out.clear();
                self.state = match self.fallbacks.pop() {
                    Some(f) => State::Inflate(Box::new(Decompress::new(f == Framing::Zlib)), f),
                    None => State::Through,
                };
                let all = self.given.clone();
                result = self.run(all, 0, end, cap, &mut out);
            }
        }
        if !self.settled {
            let stands = end
                || out.len() >= cap
                || self.fed >= SETTLE
                || matches!(self.state, State::Through);
            // (A failure past SETTLE keeps the reading's output whichever push brings it, so
            // standing early changes nothing.)
            if !stands {
                self.held = out;
                return Vec::new();
            }
            self.settled = true;
            self.given = Vec::new();
        }
        self.produced += out.len();
        out
    }

    /// Runs `input` (starting at byte `at` of the layer's input) through the current
    /// reading; when the reading fails, `Err` with where, and the bytes not consumed.
    fn run(
        &mut self,
        mut input: Vec<u8>,
        mut at: usize,
        end: bool,
        cap: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), (usize, Vec<u8>)> {
        loop {
            if out.len() >= cap {
                return Ok(());
            }
            match &mut self.state {
                State::Sniff(seen, member) => {
                    let member = *member;
                    seen.extend_from_slice(&input);
                    if seen.len() < 2 && !end {
                        return Ok(());
                    }
                    let seen = std::mem::take(seen);
                    at -= seen.len() - input.len();
                    self.state = if seen.starts_with(&[0x1f, 0x8b]) {
                        State::GzipHeader(Vec::new())
                    } else if member {
                        // Bytes after a gzip stream, as lenient clients do: ignored.
                        State::Done(Framing::Gzip)
                    } else if is_zlib(&seen) {
                        self.fallbacks = vec![Framing::Raw];
                        State::Inflate(Box::new(Decompress::new(true)), Framing::Zlib)
                    } else if seen.len() < 2 {
                        State::Through
                    } else {
                        State::Inflate(Box::new(Decompress::new(false)), Framing::Raw)
                    };
                    input = seen;
                }
                State::GzipHeader(head) => {
                    let before = head.len();
                    head.extend_from_slice(&input);
                    match gzip_header_len(head) {
                        Ok(Some(n)) => {
                            let rest = head.split_off(n);
                            at += n - before;
                            self.state =
                                State::Inflate(Box::new(Decompress::new(false)), Framing::Gzip);
                            input = rest;
                        }
                        Ok(None) if head.len() <= MAX_GZIP_HEADER && !end => return Ok(()),
                        // Truncated, or not a header this reads.
                        _ => return Err((at - before, std::mem::take(head))),
                    }
                }
                State::Inflate(d, framing) => {
                    let framing = *framing;
                    let (used, inflated) = inflate(d, &input, out, cap);
                    at += used;
                    match inflated {
                        Inflated::NeedMore => return Ok(()),
                        Inflated::Full => {
                            self.used = at;
                            return Ok(());
                        }
                        Inflated::End => {
                            self.state = if framing == Framing::Gzip {
                                State::GzipTrailer(0)
                            } else {
                                State::Done(framing)
                            };
                            input.drain(..used);
                        }
                        Inflated::Broken => return Err((at, input.split_off(used))),
                    }
                }
                State::GzipTrailer(skipped) => {
                    let take = (8 - *skipped).min(input.len());
                    *skipped += take;
                    at += take;
                    input.drain(..take);
                    if input.is_empty() {
                        return Ok(());
                    }
                    // Another member (concatenated gzip), or bytes after the stream.
                    self.state = State::Sniff(Vec::new(), true);
                }
                State::Done(framing) => {
                    // Bytes after a zlib or deflate stream that ended before its reading
                    // stood: plain data that happened to decode (an end of block is seven
                    // zero bits), not this reading. After gzip, or once it stood: ignored.
                    return if input.is_empty() || *framing == Framing::Gzip || at >= SETTLE {
                        Ok(())
                    } else {
                        Err((at, input))
                    };
                }
                State::Through => {
                    let n = input.len().min(cap.saturating_sub(out.len()));
                    out.extend_from_slice(&input[..n]);
                    return Ok(());
                }
            }
        }
    }
}

enum Inflated {
    /// All input consumed; more may come.
    NeedMore,
    /// The output reached its cap: the rest is not decoded.
    Full,
    /// The stream ended.
    End,
    /// Not valid deflate here.
    Broken,
}

/// Inflates `input` into `out` up to `cap` bytes; the input bytes consumed, and why it
/// stopped.
fn inflate(d: &mut Decompress, input: &[u8], out: &mut Vec<u8>, cap: usize) -> (usize, Inflated) {
    let mut at = 0;
    let mut buf = [0u8; 8192];
    loop {
        let room = cap.saturating_sub(out.len()).min(buf.len());
        if room == 0 {
            return (at, Inflated::Full);
        }
        let (in_before, out_before) = (d.total_in(), d.total_out());
        let status = d.decompress(&input[at..], &mut buf[..room], FlushDecompress::None);
        let used = usize::try_from(d.total_in() - in_before).unwrap_or(0);
        let made = usize::try_from(d.total_out() - out_before).unwrap_or(0);
        at += used;
        out.extend_from_slice(&buf[..made]);
        match status {
            Ok(Status::StreamEnd) => return (at, Inflated::End),
            Ok(_) if made < room && (at >= input.len() || used == 0) => {
                return (at, Inflated::NeedMore);
            }
            Ok(_) => {}
            Err(_) => return (at, Inflated::Broken),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use flate2::Compression;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use proptest::prelude::*;
    use std::io::Write;

    pub(crate) fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }
    fn zlib(b: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }
    fn raw(b: &[u8]) -> Vec<u8> {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn decode(layers: usize, body: &[u8], cuts: &[usize], room: usize) -> Decoded {
        let mut d = BodyDecoder::new(layers);
        let mut out = Decoded::default();
        let mut at = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        points.sort_unstable();
        points.push(body.len());
        for p in points {
            let end = p == body.len();
            let got = d.push(
                &body[at..p.max(at)],
                end,
                room.saturating_sub(out.bytes.len()),
            );
            out.bytes.extend(got.bytes);
            out.bomb = out.bomb.or(got.bomb);
            at = p.max(at);
        }
        out
    }

    const TEXT: &[u8] = b"GET /etc/passwd and more: the attack is hidden in here, 0123456789";

    #[test]
    fn codings_of_a_header() {
        let c = |v: &[&str]| codings(v.iter().map(|s| s.as_bytes()));
        assert_eq!(c(&["gzip"]), (1, false));
        assert_eq!(c(&["X-GZIP"]), (1, false));
        assert_eq!(c(&["deflate, gzip"]), (2, false));
        assert_eq!(c(&["gzip", "gzip"]), (2, false));
        assert_eq!(c(&["gzip, gzip, gzip"]), (2, true));
        assert_eq!(c(&["identity"]), (0, false));
        assert_eq!(c(&["gzip, identity"]), (1, false));
        assert_eq!(c(&["gzip, br"]), (0, false));
        assert_eq!(c(&["br, gzip"]), (1, false));
        assert_eq!(c(&[]), (0, false));
    }

    #[test]
    fn each_framing_whatever_the_label() {
        for body in [gzip(TEXT), zlib(TEXT), raw(TEXT)] {
            assert_eq!(decode(1, &body, &[], 1 << 20).bytes, TEXT);
        }
    }

    #[test]
    fn double_and_concatenated() {
        assert_eq!(decode(2, &gzip(&gzip(TEXT)), &[], 1 << 20).bytes, TEXT);
        assert_eq!(decode(2, &zlib(&gzip(TEXT)), &[3, 17], 1 << 20).bytes, TEXT);
        let mut two = gzip(b"first ");
        two.extend(gzip(b"second"));
        assert_eq!(decode(1, &two, &[], 1 << 20).bytes, b"first second");
        // One layer undone of two: the inner one is inspected as it is.
        assert_eq!(
            decode(1, &gzip(&gzip(TEXT)), &[], 1 << 20).bytes,
            gzip(TEXT)
        );
    }

    #[test]
    fn not_compressed_truncated_or_broken() {
        // Labelled but plain: as sent.
        assert_eq!(decode(1, TEXT, &[], 1 << 20).bytes, TEXT);
        assert_eq!(decode(1, b"x", &[], 1 << 20).bytes, b"x");
        assert_eq!(decode(1, b"", &[], 1 << 20).bytes, b"");
        // Truncated: what decoded.
        let long: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let g = gzip(&long);
        let got = decode(1, &g[..g.len() / 2], &[], 1 << 20).bytes;
        assert!(!got.is_empty() && long.starts_with(&got), "{}", got.len());
        // A gzip header cut short: as sent.
        assert_eq!(decode(1, &g[..6], &[], 1 << 20).bytes, &g[..6]);
        // Broken after some output: the output, then the rest as sent.
        let mut broken = raw(&long);
        let cut = broken.len() / 2;
        broken.truncate(cut);
        broken.extend_from_slice(&[0xff; 64]);
        let got = decode(1, &broken, &[], 1 << 20).bytes;
        assert!(got.len() > 1000 && long.starts_with(&got[..1000]));
    }

    #[test]
    fn plain_bodies_labelled_compressed_are_inspected_as_sent() {
        // What a server that ignores a request's Content-Encoding would read: an evader's
        // label must not hide the text. Every first byte, and text that decodes as deflate
        // for a while (`{` starts a fixed-Huffman block; `@` after ASCII ends one).
        let mut bodies: Vec<Vec<u8>> = (0..=255u8)
            .map(|b| {
                let mut v = vec![b];
                v.extend_from_slice(b"user=a@b.example&cmd=whoami&x=1");
                v
            })
            .collect();
        bodies.push(br#"{"user":"a@b.example","cmd":"cat /etc/passwd"}"#.to_vec());
        bodies.push(b"{@@@@@@@@ cmd=whoami".to_vec());
        let mut decoded_instead = 0;
        for body in &bodies {
            let got = decode(1, body, &[], 1 << 20).bytes;
            if got != *body {
                decoded_instead += 1;
                assert!(!got.is_empty(), "{body:?} decoded to nothing");
            }
        }
        assert_eq!(decoded_instead, 0, "plain bodies read as deflate");
    }

    #[test]
    fn a_bomb_is_bounded_and_said() {
        let zeros = vec![0u8; 50 << 20];
        let bomb = gzip(&gzip(&zeros));
        let got = decode(2, &bomb, &[], 100 * 1024);
        assert_eq!(got.bytes.len(), 100 * 1024);
        assert!(
            matches!(got.bomb, Some(DecodeEvent::CompressionBomb { .. })),
            "{:?}",
            got.bomb
        );
        // One layer, zlib, cut into pieces: the same.
        let got = decode(1, &zlib(&zeros), &[10, 300, 5000], 100 * 1024);
        assert_eq!(got.bytes.len(), 100 * 1024);
        assert!(got.bomb.is_some());
        // Ordinary text cut at the limit is no bomb.
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{i} ").into_bytes())
            .collect();
        let got = decode(1, &gzip(&text), &[], 100 * 1024);
        assert_eq!((got.bytes.len(), got.bomb), (100 * 1024, None));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn the_same_bytes_however_the_body_is_cut(
            text in proptest::collection::vec(any::<u8>(), 0..3000),
            framing in 0..5usize,
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            truncate in any::<bool>(),
        ) {
            let mut body = match framing {
                0 => gzip(&text),
                1 => zlib(&text),
                2 => raw(&text),
                3 => gzip(&zlib(&text)),
                _ => text.clone(),
            };
            if truncate {
                body.truncate(body.len() * 2 / 3);
            }
            let layers = if framing == 3 { 2 } else { 1 };
            let whole = decode(layers, &body, &[], 1 << 20);
            let cut = decode(layers, &body, &cuts, 1 << 20);
            prop_assert_eq!(&whole.bytes, &cut.bytes);
            if !truncate {
                prop_assert_eq!(&whole.bytes, &text);
            }
        }
    }
}
