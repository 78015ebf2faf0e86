//! The PROXY protocol (HAProxy, versions 1 and 2): the header a load balancer sends before
//! the client's bytes, naming the real client. A sans-IO parser ([`parse`]: bytes in, a header
//! or how many more bytes it certainly needs out, so a driver never reads past the header) and
//! a bounded async reader ([`read_header`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// Which version a listener expects (`listen.proxy_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// (client, destination) as the proxy saw them; None for a v1 `UNKNOWN` or v2 `LOCAL`
    /// connection (the proxy's own, e.g. a health check): the connection's own addresses apply.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    /// v2 type-length-value fields, as received (a CRC32C one has been checked).
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// At least this many more bytes (>= 1) belong to the header.
    Incomplete(usize),
    /// The header, and its length in the input.
    Done(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol {0:?} header")]
    NotProxy(Version),
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    #[error("PROXY header longer than {0} octets")]
    TooLong(usize),
    #[error("PROXY header for an unsupported transport (only TCP over IPv4/IPv6)")]
    Unsupported,
    #[error("PROXY header checksum (CRC32C) does not match")]
    Checksum,
}

/// The longest v1 header, CRLF included (the specification's bound).
pub const V1_MAX: usize = 107;
/// The longest v2 header we accept (16-octet preamble included): addresses and the TLVs
/// load balancers send (ALPN, authority, unique id, TLS details) fit well within it.
pub const V2_MAX: usize = 4096;

const V1_MIN: usize = 15; // "PROXY UNKNOWN\r\n"
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const PP2_TYPE_CRC32C: u8 = 0x03;

/// Parses the start of `buf`: `Ok(Parsed::Done(n))` when the first `n` bytes are a complete
/// header (call [`header`] for it), `Ok(Parsed::Incomplete(k))` when `k` more bytes are needed
/// first. Never needs more than [`V1_MAX`] / [`V2_MAX`] bytes in all.
pub fn parse(version: Version, buf: &[u8]) -> Result<Parsed, ProxyError> {
    match version {
        Version::V1 => {
            parse_v1(buf).map(|r| r.map_or_else(Parsed::Incomplete, |(n, _)| Parsed::Done(n)))
        }
        Version::V2 => {
            parse_v2(buf).map(|r| r.map_or_else(Parsed::Incomplete, |(n, _)| Parsed::Done(n)))
        }
    }
}

/// The header at the start of `buf` (see [`parse`]).
pub fn header(version: Version, buf: &[u8]) -> Result<Option<(usize, ProxyHeader)>, ProxyError> {
    match version {
        Version::V1 => parse_v1(buf).map(Result::ok),
        Version::V2 => parse_v2(buf).map(Result::ok),
    }
}

type Step = Result<(usize, ProxyHeader), usize>;

fn parse_v1(buf: &[u8]) -> Result<Step, ProxyError> {
    let prefix = b"PROXY ";
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        return Err(ProxyError::NotProxy(Version::V1));
    }
    let Some(lf) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX {
            return Err(ProxyError::TooLong(V1_MAX));
        }
        return Ok(Err(V1_MIN.saturating_sub(buf.len()).max(1)));
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(ProxyError::Malformed("line not ended by CRLF"));
    }
    let line = &buf[..lf - 1];
    if line.iter().any(|&b| !(b' '..=b'~').contains(&b)) {
        return Err(ProxyError::Malformed("control or non-ASCII octet"));
    }
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let mut words = line.split(' ');
    let _proxy = words.next();
    let proto = words.next().unwrap_or_default();
    let header = |addresses| ProxyHeader {
        addresses,
        tlvs: Vec::new(),
    };
    match proto {
        // The rest of an UNKNOWN line is to be ignored (the specification).
        "UNKNOWN" => Ok(Ok((lf + 1, header(None)))),
        "TCP4" | "TCP6" => {
            let fields: Vec<&str> = words.collect();
            let [src, dst, sport, dport] = fields[..] else {
                return Err(ProxyError::Malformed(
                    "expected: source destination sport dport",
                ));
            };
            let ip = |s: &str| -> Result<IpAddr, ProxyError> {
                let ok = if proto == "TCP4" {
                    s.parse::<Ipv4Addr>().map(IpAddr::V4).ok()
                } else {
                    s.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
                };
                ok.ok_or(ProxyError::Malformed("bad address for the protocol"))
            };
            let port = |s: &str| -> Result<u16, ProxyError> {
                let canonical = !s.is_empty()
                    && s.len() <= 5
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && (s == "0" || !s.starts_with('0'));
                canonical
                    .then(|| s.parse().ok())
                    .flatten()
                    .ok_or(ProxyError::Malformed("bad port"))
            };
            let client = SocketAddr::new(ip(src)?, port(sport)?);
            let dest = SocketAddr::new(ip(dst)?, port(dport)?);
            Ok(Ok((lf + 1, header(Some((client, dest))))))
        }
        _ => Err(ProxyError::Malformed(
            "protocol must be TCP4, TCP6 or UNKNOWN",
        )),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Step, ProxyError> {
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] != V2_SIG[..n] {
        return Err(ProxyError::NotProxy(Version::V2));
    }
    if buf.len() < 16 {
        return Ok(Err(16 - buf.len()));
    }
    let local = v2_is_local(buf[12])?;
    let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if total > V2_MAX {
        return Err(ProxyError::TooLong(V2_MAX));
    }
    if buf.len() < total {
        return Ok(Err(total - buf.len()));
    }
    let (addresses, addr_len) = v2_addresses(buf[13], local, &buf[16..total])?;
    let tlvs = v2_tlvs(&buf[..total], 16 + addr_len)?;
    Ok(Ok((
        total,
        ProxyHeader {
            addresses: if local { None } else { addresses },
            tlvs,
        },
    )))
}

/// The version and command octet: true for `LOCAL` (the proxy's own connection), false for
/// `PROXY`.
fn v2_is_local(ver_cmd: u8) -> Result<bool, ProxyError> {
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("version is not 2"));
    }
    match ver_cmd & 0x0f {
        0 => Ok(true),
        1 => Ok(false),
        _ => Err(ProxyError::Malformed("unknown command")),
    }
}

/// The (client, destination) address block of `family` at the start of `body`, and its length.
fn v2_addresses(
    family: u8,
    local: bool,
    body: &[u8],
) -> Result<(Option<(SocketAddr, SocketAddr)>, usize), ProxyError> {
    let width = match family {
        0x11 => 4,  // TCP over IPv4
        0x21 => 16, // TCP over IPv6
        // UNSPEC (LOCAL, or a transport the proxy could not name), UDP, UNIX sockets: not an
        // SMTP client we can name, which only a LOCAL connection may leave unnamed.
        _ if local => return Ok((None, 0)),
        _ => return Err(ProxyError::Unsupported),
    };
    let len = 2 * width + 4;
    let b = body
        .get(..len)
        .ok_or(ProxyError::Malformed("address block too short"))?;
    let ip = |o: usize| match width {
        4 => IpAddr::from([b[o], b[o + 1], b[o + 2], b[o + 3]]),
        _ => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[o..o + 16]);
            IpAddr::from(a)
        }
    };
    let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
    let client = SocketAddr::new(ip(0), port(2 * width));
    let dest = SocketAddr::new(ip(width), port(2 * width + 2));
    Ok((Some((client, dest)), len))
}

/// The type-length-value fields of `header` from `start` on; a CRC32C field is checked
/// against the whole header.
fn v2_tlvs(header: &[u8], start: usize) -> Result<Vec<(u8, Vec<u8>)>, ProxyError> {
    let mut tlvs = Vec::new();
    let mut at = start;
    let mut crc_at = None;
    while at < header.len() {
        let [t, hi, lo, ..] = header[at..] else {
            return Err(ProxyError::Malformed("truncated TLV"));
        };
        let l = usize::from(u16::from_be_bytes([hi, lo]));
        let value = header
            .get(at + 3..at + 3 + l)
            .ok_or(ProxyError::Malformed("TLV longer than the header"))?;
        if t == PP2_TYPE_CRC32C {
            if l != 4 || crc_at.is_some() {
                return Err(ProxyError::Malformed("bad CRC32C TLV"));
            }
            crc_at = Some(at + 3);
        }
        tlvs.push((t, value.to_vec()));
        at += 3 + l;
    }
    if let Some(at) = crc_at {
        let mut copy = header.to_vec();
        let sent = u32::from_be_bytes([copy[at], copy[at + 1], copy[at + 2], copy[at + 3]]);
        copy[at..at + 4].fill(0);
        if crc32c(&copy) != sent {
            return Err(ProxyError::Checksum);
        }
    }
    Ok(tlvs)
}

/// CRC-32C (Castagnoli), bitwise: headers are small.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Why no header could be read from a connection.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Header(#[from] ProxyError),
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before the PROXY header was complete")]
    Closed,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads exactly one header from `stream` (never a byte of what follows it), within
/// `timeout` in all.
pub async fn read_header<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    version: Version,
    timeout: Duration,
) -> Result<ProxyHeader, ReadError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = Vec::with_capacity(128);
    loop {
        match parse(version, &buf)? {
            Parsed::Done(_) => {
                return match header(version, &buf)? {
                    Some((_, h)) => Ok(h),
                    None => Err(ReadError::Closed),
                }
            }
            Parsed::Incomplete(more) => {
                let start = buf.len();
                buf.resize(start + more, 0);
                let n = tokio::time::timeout_at(deadline, stream.read(&mut buf[start..]))
                    .await
                    .map_err(|_| ReadError::Timeout(timeout))??;
                if n == 0 {
                    return Err(ReadError::Closed);
                }
                buf.truncate(start + n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(version: Version, wire: &[u8]) -> ProxyHeader {
        assert_eq!(
            parse(version, wire),
            Ok(Parsed::Done(wire.len())),
            "{wire:?}"
        );
        header(version, wire).unwrap().unwrap().1
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A v2 header (PROXY, TCP4 or TCP6) with the given TLVs, optionally with a CRC32C TLV.
    pub(super) fn v2(
        client: SocketAddr,
        dest: SocketAddr,
        tlvs: &[(u8, &[u8])],
        crc: bool,
    ) -> Vec<u8> {
        let mut body = Vec::new();
        let family = match (client.ip(), dest.ip()) {
            (IpAddr::V4(c), IpAddr::V4(d)) => {
                body.extend(c.octets());
                body.extend(d.octets());
                0x11
            }
            (IpAddr::V6(c), IpAddr::V6(d)) => {
                body.extend(c.octets());
                body.extend(d.octets());
                0x21
            }
            _ => panic!("mixed families"),
        };
        body.extend(client.port().to_be_bytes());
        body.extend(dest.port().to_be_bytes());
        for (t, v) in tlvs {
            body.push(*t);
            body.extend((v.len() as u16).to_be_bytes());
            body.extend(*v);
        }
        if crc {
            body.extend([PP2_TYPE_CRC32C, 0, 4, 0, 0, 0, 0]);
        }
        let mut out = V2_SIG.to_vec();
        out.extend([0x21, family]);
        out.extend((body.len() as u16).to_be_bytes());
        out.extend(body);
        if crc {
            let c = crc32c(&out);
            let at = out.len() - 4;
            out[at..].copy_from_slice(&c.to_be_bytes());
        }
        out
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let h = done(Version::V1, b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 25\r\n");
        assert_eq!(
            h.addresses,
            Some((sa("192.0.2.7:4711"), sa("127.0.0.1:25")))
        );
        let h = done(Version::V1, b"PROXY TCP6 2001:db8::1 ::1 65535 587\r\n");
        assert_eq!(
            h.addresses,
            Some((sa("[2001:db8::1]:65535"), sa("[::1]:587")))
        );
        assert_eq!(done(Version::V1, b"PROXY UNKNOWN\r\n").addresses, None);
        assert_eq!(
            done(Version::V1, b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").addresses,
            None
        );
    }

    #[test]
    fn v1_never_needs_a_byte_past_the_header() {
        let wire = b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 25\r\nEHLO x\r\n";
        let end = wire.iter().position(|&b| b == b'\n').unwrap() + 1;
        let mut have = 0;
        loop {
            match parse(Version::V1, &wire[..have]).unwrap() {
                Parsed::Incomplete(k) => {
                    assert!(k >= 1 && have + k <= end, "asked for {k} at {have}");
                    have += k;
                }
                Parsed::Done(n) => {
                    assert_eq!(n, end);
                    break;
                }
            }
        }
        // The shortest header: its 15 octets may be read at once.
        assert_eq!(parse(Version::V1, b""), Ok(Parsed::Incomplete(15)));
    }

    #[test]
    fn v1_rejects_what_is_not_exactly_the_format() {
        let bad: &[&[u8]] = &[
            b"EHLO x\r\n",
            b"proxy TCP4 192.0.2.7 127.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 1 2\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 1\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 1 2 3\r\n",
            b"PROXY TCP4  192.0.2.7 127.0.0.1 1 2\r\n",
            b"PROXY TCP4 ::1 127.0.0.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 ::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 65536 2\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 025 2\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 -1 2\r\n",
            b"PROXY UDP4 192.0.2.7 127.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 1 2\r\x00\n",
            b"PROXY TCP4 192.0.2.\xc3\xa9 127.0.0.1 1 2\r\n",
        ];
        for wire in bad {
            assert!(
                parse(Version::V1, wire).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        // A v2 header on a v1 listener, and the other way round.
        let v2 = v2(sa("192.0.2.7:1"), sa("127.0.0.1:25"), &[], false);
        assert_eq!(
            parse(Version::V1, &v2),
            Err(ProxyError::NotProxy(Version::V1))
        );
        assert_eq!(
            parse(Version::V2, b"PROXY UNKNOWN\r\n"),
            Err(ProxyError::NotProxy(Version::V2))
        );
    }

    #[test]
    fn v1_is_bounded() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'a');
        assert_eq!(parse(Version::V1, &long), Err(ProxyError::TooLong(V1_MAX)));
        long.truncate(V1_MAX - 2);
        long.extend(b"\r\n");
        assert!(matches!(
            parse(Version::V1, &long),
            Ok(Parsed::Done(V1_MAX))
        ));
    }

    #[test]
    fn v2_addresses_and_tlvs() {
        let wire = v2(
            sa("192.0.2.7:4711"),
            sa("127.0.0.1:25"),
            &[(0x02, b"mx.example"), (0x04, b"")],
            true,
        );
        let h = done(Version::V2, &wire);
        assert_eq!(
            h.addresses,
            Some((sa("192.0.2.7:4711"), sa("127.0.0.1:25")))
        );
        assert_eq!(h.tlvs[0], (0x02, b"mx.example".to_vec()));
        assert_eq!(h.tlvs.len(), 3);
        let h = done(
            Version::V2,
            &v2(sa("[2001:db8::7]:1"), sa("[::1]:25"), &[], false),
        );
        assert_eq!(h.addresses, Some((sa("[2001:db8::7]:1"), sa("[::1]:25"))));
        // LOCAL (a health check): no addresses, whatever the family.
        let mut local = v2(sa("192.0.2.7:1"), sa("127.0.0.1:25"), &[], false);
        local[12] = 0x20;
        assert_eq!(done(Version::V2, &local).addresses, None);
    }

    #[test]
    fn v2_never_needs_a_byte_past_the_header() {
        let mut wire = v2(
            sa("192.0.2.7:1"),
            sa("127.0.0.1:25"),
            &[(0x05, b"id")],
            false,
        );
        let end = wire.len();
        wire.extend(b"EHLO x\r\n");
        let mut have = 0;
        while let Parsed::Incomplete(k) = parse(Version::V2, &wire[..have]).unwrap() {
            assert!(k >= 1 && have + k <= end);
            have += k;
        }
        assert_eq!(have, end);
    }

    #[test]
    fn v2_rejects_malformed_headers() {
        let good = v2(sa("192.0.2.7:1"), sa("127.0.0.1:25"), &[(0x02, b"x")], true);
        let broken = |at: usize, b: u8| {
            let mut w = good.clone();
            w[at] = b;
            parse(Version::V2, &w)
        };
        assert!(broken(12, 0x11).is_err(), "version 1");
        assert!(broken(12, 0x22).is_err(), "unknown command");
        assert_eq!(broken(13, 0x12), Err(ProxyError::Unsupported), "UDP");
        assert_eq!(broken(13, 0x31), Err(ProxyError::Unsupported), "UNIX");
        assert_eq!(
            broken(13, 0x00),
            Err(ProxyError::Unsupported),
            "PROXY without addresses"
        );
        assert_eq!(broken(5, b'X'), Err(ProxyError::NotProxy(Version::V2)));
        assert_eq!(
            broken(28, b'y'),
            Err(ProxyError::Checksum),
            "TLV value changed"
        );
        // A TLV longer than what is left; an address block cut short.
        let mut w = good.clone();
        w[29] = 0xff;
        assert!(parse(Version::V2, &w).is_err());
        let mut short = V2_SIG.to_vec();
        short.extend([0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(parse(Version::V2, &short).is_err());
        // Over the bound: refused from the length alone, before reading the body.
        let mut huge = V2_SIG.to_vec();
        huge.extend([0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(Version::V2, &huge), Err(ProxyError::TooLong(V2_MAX)));
    }

    #[test]
    fn crc32c_known_answer() {
        // RFC 3720 B.4: 32 octets of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[tokio::test]
    async fn reader_stops_at_the_header_and_is_bounded_in_time() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(
            &mut a,
            b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 25\r\nEHLO x\r\n",
        )
        .await
        .unwrap();
        let h = read_header(&mut b, Version::V1, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(h.addresses.unwrap().0, sa("192.0.2.7:4711"));
        let mut rest = [0u8; 8];
        b.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"EHLO x\r\n");
        // A proxy that sends half a header and stalls.
        let (mut a, mut b) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"PROXY TCP4 1")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let e = read_header(&mut b, Version::V1, Duration::from_millis(200)).await;
        assert!(matches!(e, Err(ReadError::Timeout(_))), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
