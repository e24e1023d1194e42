//! Arbitrary bytes as one direction of an HTTP/1 connection (requests, or responses to a mix
//! of methods), cut at arbitrary points: never a panic, and the same heads, body bytes and
//! stop however the bytes are cut.
#![no_main]

use eastwall_ids::h1::{Event, Framer, Method, Role, Stop};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum Seen {
    Head(Vec<u8>),
    Body(Vec<u8>),
    End,
    Stopped(Stop),
}

fn frame(role: Role, methods: &[Method], data: &[u8], cut: usize) -> Vec<Seen> {
    let mut f = Framer::new(role, 512);
    for m in methods {
        f.expect_response_to(*m);
    }
    let mut seen: Vec<Seen> = Vec::new();
    let mut on = |e: Event<'_>| match e {
        Event::Head(h) => {
            if let Some(parsed) = match role {
                Role::Request => eastwall_ids::h1::parse_request(&h).map(|r| r.raw_headers.len()),
                Role::Response => eastwall_ids::h1::parse_response(&h).map(|r| r.raw_headers.len()),
            } {
                assert!(parsed <= h.len());
            }
            seen.push(Seen::Head(h));
        }
        Event::Body { data, end } => {
            if let Some(Seen::Body(b)) = seen.last_mut() {
                b.extend_from_slice(data);
            } else if !data.is_empty() {
                seen.push(Seen::Body(data.to_vec()));
            }
            if end {
                seen.push(Seen::End);
            }
        }
        Event::Stopped(s) => seen.push(Seen::Stopped(s)),
    };
    for piece in data.chunks(cut.max(1)) {
        f.push(piece, &mut on);
    }
    f.end(&mut on);
    seen
}

fuzz_target!(|input: (u8, u8, Vec<u8>)| {
    let (cut, mix, data) = input;
    let role = if mix & 1 == 0 { Role::Request } else { Role::Response };
    let methods: Vec<Method> = (0..4)
        .map(|i| match (mix >> (1 + 2 * i)) & 3 {
            0 => Method::Head,
            1 => Method::Connect,
            _ => Method::Other,
        })
        .collect();
    let whole = frame(role, &methods, &data, data.len());
    assert_eq!(whole, frame(role, &methods, &data, usize::from(cut)));
});
