//! TLS client and server fingerprints, as Suricata 7 computes them for its `ja3.*`,
//! `ja3s.*` and `ja4.hash` keywords:
//!
//! - JA3 (client): `version,ciphers,extensions,groups,point_formats`, decimal numbers joined
//!   by `-`, GREASE values left out; its hash is the MD5 of that string in lower-case hex.
//! - JA3S (server): `version,cipher,extensions` of the ServerHello, hashed the same way.
//! - JA4 (client): `t13d1516h2_8daaf6152771_e5627efa2ab1`: transport, highest version,
//!   SNI or not, cipher and extension counts, ALPN's first and last characters; then the
//!   first 12 hex digits of the SHA-256 of the sorted ciphers, and of the sorted extensions
//!   (without SNI and ALPN), `_`, and the signature algorithms in the order sent. As in
//!   Suricata 7.0.10 (checked against it), that last part is hashed even when both lists are
//!   empty (`_` alone), where FoxIO's description writes zeros.
//!
//! Versions are the hellos' `legacy_version` for JA3 and JA3S, as in Suricata.

use eastwall_wire::sniff::{ClientHello, is_grease};
use md5::{Digest, Md5};
use sha2::Sha256;
use std::fmt::Write;

const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

/// What the server's hello says, for JA3S and `tls.version`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServerHello {
    /// `legacy_version`.
    pub(crate) legacy_version: u16,
    /// The chosen cipher suite.
    pub(crate) cipher: u16,
    /// Extension types in the order sent.
    pub(crate) extensions: Vec<u16>,
    /// The `supported_versions` extension's choice (TLS 1.3).
    pub(crate) selected_version: Option<u16>,
}

impl ServerHello {
    /// The version the server speaks.
    pub(crate) fn version(&self) -> u16 {
        self.selected_version.unwrap_or(self.legacy_version)
    }
}

/// The JA3 string of a ClientHello.
pub(crate) fn ja3(hello: &ClientHello) -> String {
    let mut s = hello.legacy_version.to_string();
    s.push(',');
    join(&mut s, hello.cipher_suites.iter().copied());
    s.push(',');
    join(&mut s, hello.extensions.iter().copied());
    s.push(',');
    join(&mut s, hello.supported_groups.iter().copied());
    s.push(',');
    join(&mut s, hello.ec_point_formats.iter().map(|&f| u16::from(f)));
    s
}

/// The JA3S string of a ServerHello.
pub(crate) fn ja3s(hello: &ServerHello) -> String {
    let mut s = format!("{},{},", hello.legacy_version, hello.cipher);
    join(&mut s, hello.extensions.iter().copied());
    s
}

/// MD5 in lower-case hex: the hash of a JA3 or JA3S string.
pub(crate) fn md5_hex(text: &str) -> String {
    hex(&Md5::digest(text.as_bytes()))
}

/// The JA4 fingerprint of a ClientHello (over TCP: `t`; `q` is QUIC, which the IDS does
/// not read).
pub(crate) fn ja4(hello: &ClientHello) -> String {
    let ciphers: Vec<u16> = not_grease(&hello.cipher_suites).collect();
    let extensions: Vec<u16> = not_grease(&hello.extensions).collect();
    let version = not_grease(&hello.supported_versions)
        .chain([hello.legacy_version])
        .max()
        .unwrap_or(hello.legacy_version);
    let sni = if extensions.contains(&EXT_SERVER_NAME) {
        'd'
    } else {
        'i'
    };
    let (first, last) = alpn_chars(hello.alpn.first().map(String::as_str));
    let mut out = format!(
        "t{}{sni}{:02}{:02}{first}{last}_",
        version_code(version),
        ciphers.len().min(99),
        extensions.len().min(99),
    );
    let mut sorted = ciphers;
    sorted.sort_unstable();
    out.push_str(&truncated_sha256(&hex_list(&sorted)));
    out.push('_');
    let mut sorted: Vec<u16> = extensions
        .into_iter()
        .filter(|e| !matches!(*e, EXT_SERVER_NAME | EXT_ALPN))
        .collect();
    sorted.sort_unstable();
    let algorithms: Vec<u16> = not_grease(&hello.signature_algorithms).collect();
    let raw = format!("{}_{}", hex_list(&sorted), hex_list(&algorithms));
    out.push_str(&truncated_sha256(&raw));
    out
}

/// JA4's two-letter version.
fn version_code(version: u16) -> &'static str {
    match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0200 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// JA4's ALPN characters: the first protocol's first and last characters when both are
/// alphanumeric, else the first and last hex digits of its bytes; `00` without ALPN.
fn alpn_chars(first: Option<&str>) -> (char, char) {
    // The sniffer maps ALPN bytes one to one onto chars.
    let bytes: Vec<u8> = first
        .unwrap_or_default()
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect();
    let (Some(&a), Some(&z)) = (bytes.first(), bytes.last()) else {
        return ('0', '0');
    };
    if a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric() {
        (char::from(a), char::from(z))
    } else {
        let digit = |n: u8| char::from_digit(u32::from(n), 16).unwrap_or('0');
        (digit(a >> 4), digit(z & 0x0f))
    }
}

fn not_grease(values: &[u16]) -> impl Iterator<Item = u16> + '_ {
    values.iter().copied().filter(|v| !is_grease(*v))
}

/// Decimal values without GREASE, joined by `-`.
fn join(s: &mut String, values: impl Iterator<Item = u16>) {
    for (i, v) in values.filter(|v| !is_grease(*v)).enumerate() {
        if i > 0 {
            s.push('-');
        }
        let _ = write!(s, "{v}");
    }
}

/// Four-digit lower-case hex values joined by `,`.
fn hex_list(values: &[u16]) -> String {
    let mut s = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{v:04x}");
    }
    s
}

fn truncated_sha256(text: &str) -> String {
    let mut h = hex(&Sha256::digest(text.as_bytes()));
    h.truncate(12);
    h
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
/// The ClientHello of FoxIO's JA4 example (Chrome, with GREASE).
pub(crate) fn chrome() -> ClientHello {
    ClientHello {
        legacy_version: 0x0303,
        supported_versions: vec![0x2a2a, 0x0304, 0x0303],
        sni: Some("example.com".into()),
        sni_raw: Some(b"example.com".to_vec()),
        alpn: vec!["h2".into(), "http/1.1".into()],
        cipher_suites: vec![
            0x0a0a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
            0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
        ],
        extensions: vec![
            0x1a1a, 0x0000, 0x0017, 0xff01, 0x000a, 0x000b, 0x0023, 0x0010, 0x0005, 0x000d, 0x0012,
            0x0033, 0x002d, 0x002b, 0x001b, 0x4469, 0x0015, 0x3a3a,
        ],
        supported_groups: vec![0x4a4a, 0x001d, 0x0017, 0x0018],
        signature_algorithms: vec![
            0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
        ],
        ec_point_formats: vec![0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ja4_of_the_published_example() {
        // FoxIO's README: t13d1516h2_8daaf6152771_e5627efa2ab1.
        assert_eq!(ja4(&chrome()), "t13d1516h2_8daaf6152771_e5627efa2ab1");
    }

    #[test]
    fn ja4_parts_follow_the_hello() {
        let mut h = chrome();
        h.extensions.retain(|e| *e != EXT_SERVER_NAME);
        h.sni = None;
        assert!(
            ja4(&h).starts_with("t13i1515h2_8daaf6152771_"),
            "{}",
            ja4(&h)
        );
        h.alpn = vec!["http/1.1".into()];
        assert!(ja4(&h).starts_with("t13i1515h1_"));
        h.alpn.clear();
        assert!(ja4(&h).starts_with("t13i151500_"));
        h.alpn = vec!["\u{0}x\u{ff}".into()];
        assert!(ja4(&h).starts_with("t13i15150f_"), "{}", ja4(&h));
        h.supported_versions.clear();
        assert!(ja4(&h).starts_with("t12i"));
        h.legacy_version = 0x0301;
        assert!(ja4(&h).starts_with("t10i"));
        // Without signature algorithms: the extension list and `_`.
        h.signature_algorithms.clear();
        let c = ja4(&h).rsplit('_').next().unwrap().to_string();
        let mut exts: Vec<u16> = chrome()
            .extensions
            .into_iter()
            .filter(|e| !is_grease(*e) && !matches!(*e, 0 | 16))
            .collect();
        exts.sort_unstable();
        assert_eq!(c, truncated_sha256(&(hex_list(&exts) + "_")));
        // No extension but SNI and ALPN, no algorithms: `_` alone, as Suricata hashes it
        // (`printf _ | sha256sum`).
        h.extensions = vec![0, 16];
        assert!(ja4(&h).ends_with("_d2e2adf7177b"), "{}", ja4(&h));
        h.cipher_suites = (0..120).collect();
        assert!(ja4(&h).starts_with("t10d9902"), "{}", ja4(&h));
    }

    #[test]
    fn ja3_leaves_grease_out() {
        let h = chrome();
        assert_eq!(
            ja3(&h),
            "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,\
             0-23-65281-10-11-35-16-5-13-18-51-45-43-27-17513-21,29-23-24,0"
        );
        // The JA3 hash commonly listed for Chrome.
        assert_eq!(md5_hex(&ja3(&h)), "cd08e31494f9531f560d64c695473da9");
        // A hello of TLS 1.0 without extensions.
        let old = ClientHello {
            legacy_version: 0x0301,
            cipher_suites: vec![0x002f, 0x0035],
            ..ClientHello::default()
        };
        assert_eq!(ja3(&old), "769,47-53,,,");
        assert_eq!(md5_hex(&ja3(&old)), "dac4920d4335e769327dbf4e1b759e15");
    }

    #[test]
    fn ja3s_and_its_hash() {
        let s = ServerHello {
            legacy_version: 0x0303,
            cipher: 0xc02f,
            extensions: vec![0xff01, 0x0000, 0x000b, 0x0023, 0x0017],
            selected_version: None,
        };
        assert_eq!(ja3s(&s), "771,49199,65281-0-11-35-23");
        // As `md5sum` says.
        assert_eq!(md5_hex(&ja3s(&s)), "098e26e2609212ac1bfac552fbe04127");
        assert_eq!(s.version(), 0x0303);
    }
}
