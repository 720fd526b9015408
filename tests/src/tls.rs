//! TLS fixtures for test runs: real `ClientHello`s written by rustls, re-cut
//! into TLS records of chosen sizes, carried by the TCP segments of one
//! flow (SYN, ACK, data, FIN) framed like [`crate::packet`]'s frames, and a
//! strict parser for the RST the program writes back.
//!
//! Nothing is cached: every call builds a fresh rustls configuration, so
//! no `ClientHello` depends on one made before it (no resumption tickets, no
//! shared randomness).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Range,
    sync::Arc,
};

use etherparse::{
    IpHeaders, LinkExtHeader, LinkHeader, NetHeaders, PacketBuilder, PacketHeaders, PayloadSlice, TcpHeader,
    TcpOptionElement, TransportHeader, VlanHeader,
};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme,
    client::{
        EchGreaseConfig, EchMode,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{WebPkiSupportedAlgorithms, aws_lc_rs, hpke::Hpke as _},
    pki_types::{CertificateDer, ServerName, UnixTime},
};

use crate::packet::{Ip, Spec, Transport, V6Ext};

/// TLS record content type of handshake messages (RFC 8446 §5.1).
pub const CONTENT_HANDSHAKE: u8 = 22;
/// Length of a TLS record header: type, legacy version, length.
pub const RECORD_HEADER_LEN: usize = 5;
/// The largest plaintext fragment a record may carry (RFC 8446 §5.1).
pub const MAX_FRAGMENT: usize = 1 << 14;
/// Extension type of `encrypted_client_hello` (draft-ietf-tls-esni).
pub const EXT_ECH: u16 = 0xfe0d;
/// Extension type of `server_name` (RFC 6066 §3).
pub const EXT_SERVER_NAME: u16 = 0;

/// What kind of `ClientHello` [`client_hello`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloKind {
    /// X25519 only: one small key share, a `ClientHello` of a few hundred bytes.
    Small,
    /// What a browser sends today: X25519MLKEM768 preferred (rustls also
    /// sends a plain X25519 share) and a GREASE `encrypted_client_hello`,
    /// TLS 1.3 only. About 1.9 KB like Chromium's, so two segments at MTU
    /// 1500 whatever the name (the key shares alone come to ~1.46-1.49 KB).
    PostQuantum,
    /// X25519 only, TLS 1.3 only, with a GREASE `encrypted_client_hello`
    /// extension (0xfe0d). GREASE ECH keeps the real name in the outer SNI.
    Ech,
    /// X25519 only, rustls with `enable_sni = false`: no `server_name`
    /// extension whatever the name.
    NoSni,
}

/// The bytes a real TLS client writes first: its `ClientHello` in one or more
/// TLS records, as rustls (aws-lc-rs provider) writes it, offering ALPN
/// `h2` and `http/1.1` like a browser. rustls shuffles the extension order
/// on every call, as Chromium does, so the name sits at a different offset
/// each time: use [`find`] to cut a stream inside it.
///
/// `sni: None` connects "to an IP address" (192.0.2.1), for which TLS
/// clients send no `server_name` (RFC 6066 §3 forbids literal addresses).
/// [`HelloKind::NoSni`] sends none either way.
pub fn client_hello(sni: Option<&str>, kind: HelloKind) -> Vec<u8> {
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = match kind {
        HelloKind::PostQuantum => vec![aws_lc_rs::kx_group::X25519MLKEM768, aws_lc_rs::kx_group::X25519],
        HelloKind::Small | HelloKind::Ech | HelloKind::NoSni => vec![aws_lc_rs::kx_group::X25519],
    };
    let verifier = Arc::new(AcceptAnything(provider.signature_verification_algorithms));
    let builder = ClientConfig::builder_with_provider(Arc::new(provider));
    let builder = if matches!(kind, HelloKind::Ech | HelloKind::PostQuantum) {
        let suite = aws_lc_rs::hpke::DH_KEM_X25519_HKDF_SHA256_AES_128;
        let (placeholder, _) = suite.generate_key_pair().expect("HPKE key pair for ECH GREASE");
        builder.with_ech(EchMode::Grease(EchGreaseConfig::new(suite, placeholder))).expect("ECH GREASE config")
    } else {
        builder.with_safe_default_protocol_versions().expect("protocol versions")
    };
    let mut config = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
    config.enable_sni = kind != HelloKind::NoSni;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = match sni {
        Some(name) => ServerName::try_from(name.to_owned()).unwrap_or_else(|e| panic!("server name {name:?}: {e}")),
        None => ServerName::IpAddress(Ipv4Addr::new(192, 0, 2, 1).into()),
    };
    let mut conn = ClientConnection::new(Arc::new(config), name).expect("rustls client connection");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("writing to a Vec");
    }
    out
}

/// A [`client_hello`] for which `wanted` holds: rustls shuffles its
/// extensions, so a layout that comes now and then (the name last, or not
/// last) is found by asking again, up to 200 times; `what` says what was
/// wanted when none had it.
pub fn client_hello_where(sni: Option<&str>, kind: HelloKind, what: &str, wanted: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    (0..200)
        .map(|_| client_hello(sni, kind))
        .find(|h| wanted(h))
        .unwrap_or_else(|| panic!("200 {kind:?} ClientHellos for {sni:?}, {what}"))
}

/// Accepts any certificate: these clients never finish a handshake.
#[derive(Debug)]
struct AcceptAnything(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The SNI rustls's server side reads from `stream`, fed in small reads.
pub fn acceptor_sni(stream: &[u8]) -> Result<Option<String>, String> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = stream;
    loop {
        let mut chunk = &rest[..rest.len().min(100)];
        let n = acceptor.read_tls(&mut chunk).map_err(|e| e.to_string())?;
        rest = &rest[n..];
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok(accepted.client_hello().server_name().map(str::to_owned)),
            Ok(None) if rest.is_empty() => return Err("the ClientHello never completed".into()),
            Ok(None) => {}
            Err((e, _)) => return Err(e.to_string()),
        }
    }
}

/// One TLS record of a byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub content_type: u8,
    /// The legacy record version (0x0301 for a first `ClientHello`).
    pub version: u16,
    pub fragment: &'a [u8],
}

/// Splits a stream of whole TLS records; panics (naming the offset) on a
/// truncated one.
pub fn records(stream: &[u8]) -> Vec<Record<'_>> {
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let at = stream.len() - rest.len();
        assert!(rest.len() >= RECORD_HEADER_LEN, "record header at offset {at} cut short");
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        let end = RECORD_HEADER_LEN + len;
        assert!(rest.len() >= end, "record at offset {at} says {len} bytes, {} left", rest.len() - RECORD_HEADER_LEN);
        out.push(Record {
            content_type: rest[0],
            version: u16::from_be_bytes([rest[1], rest[2]]),
            fragment: &rest[RECORD_HEADER_LEN..end],
        });
        rest = &rest[end..];
    }
    out
}

/// Whether `stream` is a run of whole handshake records (a capture's
/// first flight may be cut short).
pub fn whole_records(stream: &[u8]) -> bool {
    let mut rest = stream;
    while let [content_type, _, _, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if *content_type != CONTENT_HANDSHAKE || tail.len() < len {
            return false;
        }
        rest = &tail[len..];
    }
    rest.is_empty() && !stream.is_empty()
}

/// The handshake messages carried by `stream`'s records, concatenated
/// (what record-layer fragmentation must preserve).
pub fn handshake_bytes(stream: &[u8]) -> Vec<u8> {
    records(stream)
        .iter()
        .inspect(|r| assert_eq!(r.content_type, CONTENT_HANDSHAKE, "not a handshake record: {r:?}"))
        .flat_map(|r| r.fragment.iter().copied())
        .collect()
}

/// Re-encodes the handshake message(s) in `records` as TLS records whose
/// fragments have the given sizes, in order; whatever is left after the
/// sizes runs out goes into one last record, and a size larger than what
/// is left takes the rest. `refragment(x, &[])` puts everything in one
/// record. The first record's legacy version is kept.
///
/// Sizes are not checked against the protocol: a 0 writes the empty
/// handshake record RFC 8446 §5.1 forbids, and sizes over 2^14
/// ([`MAX_FRAGMENT`]) are too large for a real peer, so tests can build
/// such records on purpose. A record length must fit 16 bits.
pub fn refragment(records: &[u8], sizes: &[usize]) -> Vec<u8> {
    let version = self::records(records).first().map_or(0x0301, |r| r.version);
    let handshake = handshake_bytes(records);
    let mut rest = handshake.as_slice();
    let mut out = Vec::with_capacity(handshake.len() + RECORD_HEADER_LEN * (sizes.len() + 1));
    let mut push = |fragment: &[u8]| {
        let len = u16::try_from(fragment.len()).expect("a record fragment of at most 65535 bytes");
        out.push(CONTENT_HANDSHAKE);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(fragment);
    };
    for &size in sizes {
        if rest.is_empty() && size > 0 {
            break;
        }
        let (fragment, tail) = rest.split_at(size.min(rest.len()));
        push(fragment);
        rest = tail;
    }
    if !rest.is_empty() {
        push(rest);
    }
    out
}

/// Where `needle` first occurs in `haystack` (to cut a stream inside the
/// server name, say).
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether the `ClientHello` in `stream` carries extension `ext_type`.
pub fn has_extension(stream: &[u8], ext_type: u16) -> bool {
    extensions(stream).iter().any(|(t, _)| *t == ext_type)
}

/// The extension types of the `ClientHello` in `stream`, in order.
pub fn extension_types(stream: &[u8]) -> Vec<u16> {
    extensions(stream).into_iter().map(|(t, _)| t).collect()
}

/// The host name in the `ClientHello`'s `server_name` extension, if any
/// (RFC 6066 §3: a list of one `host_name` entry in practice).
pub fn server_name(stream: &[u8]) -> Option<String> {
    let (_, data) = extensions(stream).into_iter().find(|(t, _)| *t == EXT_SERVER_NAME)?;
    let mut r = Cursor { buf: &data, at: 0 };
    let list_len = usize::from(r.u16());
    let mut list = Cursor { buf: r.take(list_len), at: 0 };
    while list.at < list.buf.len() {
        let name_type = list.u8();
        let len = usize::from(list.u16());
        let name = list.take(len);
        if name_type == 0 {
            return Some(String::from_utf8_lossy(name).into_owned());
        }
    }
    None
}

/// The `ClientHello`'s extensions (type, data) in order. Parses the
/// handshake bytes of `stream` (RFC 8446 §4.1.2); panics on anything but a
/// well-formed `ClientHello`, which is a bug in the fixture.
pub fn extensions(stream: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let hs = handshake_bytes(stream);
    let mut r = Cursor { buf: &hs, at: 0 };
    assert_eq!(r.u8(), 1, "not a ClientHello");
    let len = r.u24();
    let mut r = Cursor { buf: r.take(len), at: 0 };
    // legacy_version, random, session id, cipher suites, compression methods.
    r.take(2 + 32);
    let n = usize::from(r.u8());
    r.take(n);
    let n = usize::from(r.u16());
    r.take(n);
    let n = usize::from(r.u8());
    r.take(n);
    let n = usize::from(r.u16());
    let mut exts = Cursor { buf: r.take(n), at: 0 };
    let mut out = Vec::new();
    while exts.at < exts.buf.len() {
        let t = exts.u16();
        let n = usize::from(exts.u16());
        out.push((t, exts.take(n).to_vec()));
    }
    out
}

/// Where the parts of a `ClientHello` sit, as offsets into its handshake
/// bytes ([`handshake_bytes`]; offset 0 is `msg_type`). Tests use it to cut
/// a stream at a field or to change bytes the parser must skip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloLayout {
    /// The 32 bytes of `random`.
    pub random: Range<usize>,
    /// The contents of `legacy_session_id` (without its length).
    pub session_id: Range<usize>,
    /// The contents of `cipher_suites`.
    pub cipher_suites: Range<usize>,
    /// The contents of `legacy_compression_methods`.
    pub compression_methods: Range<usize>,
    /// Each extension's type and the range of its data (after its 4-byte header).
    pub extensions: Vec<(u16, Range<usize>)>,
    /// One past the message's last byte (4 + its 24-bit length).
    pub end: usize,
}

impl HelloLayout {
    /// The `host_name` bytes of the `server_name` extension, when there is
    /// one holding a single `host_name` entry (list length 2, type 1 and
    /// length 2 bytes before it).
    pub fn server_name(&self) -> Option<Range<usize>> {
        let (_, data) = self.extensions.iter().find(|(t, _)| *t == EXT_SERVER_NAME)?;
        Some(data.start + 5..data.end)
    }

    /// Position of extension `ext_type` in the extension list.
    pub fn position(&self, ext_type: u16) -> Option<usize> {
        self.extensions.iter().position(|(t, _)| *t == ext_type)
    }
}

/// The layout of the `ClientHello` in `stream` (RFC 8446 §4.1.2); panics on
/// anything but a well-formed one, like [`extensions`].
pub fn hello_layout(stream: &[u8]) -> HelloLayout {
    let hs = handshake_bytes(stream);
    let mut r = Cursor { buf: &hs, at: 0 };
    assert_eq!(r.u8(), 1, "not a ClientHello");
    let end = 4 + r.u24();
    assert!(end <= hs.len(), "ClientHello of {end} bytes in {} handshake bytes", hs.len());
    let vector = |r: &mut Cursor<'_>, width: usize| {
        let n = if width == 1 { usize::from(r.u8()) } else { usize::from(r.u16()) };
        let start = r.at;
        r.take(n);
        start..r.at
    };
    r.take(2);
    let random = r.at..r.at + 32;
    r.take(32);
    let session_id = vector(&mut r, 1);
    let cipher_suites = vector(&mut r, 2);
    let compression_methods = vector(&mut r, 1);
    let mut extensions = Vec::new();
    if r.at < end {
        let block_end = r.at + 2 + usize::from(r.u16());
        assert_eq!(block_end, end, "extensions block does not fill the ClientHello");
        while r.at < end {
            let t = r.u16();
            let data = vector(&mut r, 2);
            extensions.push((t, data));
        }
    }
    HelloLayout { random, session_id, cipher_suites, compression_methods, extensions, end }
}

/// Where each handshake byte of `stream` sits in `stream`: entry `i` is the
/// stream offset of handshake byte `i` (record headers skipped).
pub fn handshake_offsets(stream: &[u8]) -> Vec<usize> {
    let mut out = Vec::with_capacity(stream.len());
    for start in record_starts(stream) {
        let len = usize::from(u16::from_be_bytes([stream[start + 3], stream[start + 4]]));
        out.extend(start + RECORD_HEADER_LEN..start + RECORD_HEADER_LEN + len);
    }
    out
}

/// Stream offsets of the record headers of `stream` (whole records, as [`records`] checks).
pub fn record_starts(stream: &[u8]) -> Vec<usize> {
    let mut at = 0;
    records(stream)
        .iter()
        .map(|r| {
            let start = at;
            at += RECORD_HEADER_LEN + r.fragment.len();
            start
        })
        .collect()
}

/// `stream`'s `ClientHello` with its extensions changed by `edit` (a list
/// of type and data, in order), every enclosing length (extensions block,
/// message, record) rewritten to match, in one record with the first
/// record's version. No content is checked, so tests can build what a
/// client library refuses to write.
pub fn with_extensions(stream: &[u8], edit: impl FnOnce(&mut Vec<(u16, Vec<u8>)>)) -> Vec<u8> {
    let hs = handshake_bytes(stream);
    let layout = hello_layout(stream);
    let mut exts: Vec<(u16, Vec<u8>)> = layout.extensions.iter().map(|(t, r)| (*t, hs[r.clone()].to_vec())).collect();
    edit(&mut exts);
    let mut block = Vec::new();
    for (t, data) in &exts {
        block.extend_from_slice(&t.to_be_bytes());
        block.extend_from_slice(&u16::try_from(data.len()).expect("extension of at most 65535 bytes").to_be_bytes());
        block.extend_from_slice(data);
    }
    let mut body = hs[4..layout.compression_methods.end].to_vec();
    body.extend_from_slice(&u16::try_from(block.len()).expect("extensions block length").to_be_bytes());
    body.extend_from_slice(&block);
    let body_len = u32::try_from(body.len()).expect("body length").to_be_bytes();
    let mut message = vec![1, body_len[1], body_len[2], body_len[3]];
    message.extend_from_slice(&body);
    let version = records(stream).first().map_or(0x0301, |r| r.version);
    let mut out = vec![CONTENT_HANDSHAKE];
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&u16::try_from(message.len()).expect("one record").to_be_bytes());
    out.extend_from_slice(&message);
    out
}

/// `stream`'s `ClientHello` with `host_name` as the one entry of its
/// `server_name` extension (any bytes: a trailing dot, upper case, empty
/// labels, 255 bytes), lengths rewritten (see [`with_extensions`]).
pub fn replace_server_name(stream: &[u8], host_name: &[u8]) -> Vec<u8> {
    let name_len = u16::try_from(host_name.len()).expect("a host_name of at most 65532 bytes");
    let mut data = (name_len + 3).to_be_bytes().to_vec();
    data.push(0);
    data.extend_from_slice(&name_len.to_be_bytes());
    data.extend_from_slice(host_name);
    with_extensions(stream, |exts| {
        let sni = exts.iter_mut().find(|(t, _)| *t == EXT_SERVER_NAME).expect("a server_name extension");
        sni.1 = data;
    })
}

/// A reader over the fixtures' own bytes: running off the end is a bug in
/// the fixture, so it panics.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = self.buf.get(self.at..self.at + n).unwrap_or_else(|| panic!("ClientHello cut short at {}", self.at));
        self.at += n;
        s
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u16(&mut self) -> u16 {
        let b = self.take(2);
        u16::from_be_bytes([b[0], b[1]])
    }
    fn u24(&mut self) -> usize {
        let b = self.take(3);
        usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2])
    }
}

/// TCP flag bits as they sit in byte 13 of the header (RFC 9293 §3.1).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// One TCP connection from the client of [`crate::packet`] (its MACs and
/// addresses) to the server, whose frames carry `spec`'s VLAN tags, IPv4
/// options or IPv6 extension headers and ports. The server's side is never
/// built: it only lends its initial sequence number to the client's ACKs.
///
/// Sequence numbers: the SYN carries `client_isn`; stream byte `i` has
/// sequence number `client_isn + 1 + i` (mod 2^32); every segment after the
/// SYN acknowledges `server_isn + 1`, as after a completed handshake.
#[derive(Clone, Debug)]
pub struct Flow {
    /// Headers (VLANs, IP variant, ports); its transport is forced to TCP.
    pub spec: Spec,
    pub client_isn: u32,
    pub server_isn: u32,
    /// The client's advertised window (unscaled field value).
    pub window: u16,
    /// Whether segments carry the timestamp option (NOP, NOP, TS), as Linux
    /// sends them: a 32-byte TCP header, 1448-byte segments at MTU 1500.
    pub timestamps: bool,
    /// The client's address when not [`crate::packet`]'s (see
    /// [`Flow::with_client_ip`]): flows that differ only by address.
    pub client_addr: Option<IpAddr>,
}

impl Flow {
    /// A flow with `spec`'s headers and ports (as given: `Spec::udp4()`'s
    /// dport is 53, so set it). IPv6 fragment headers are refused: a flow's
    /// segments are never fragments.
    pub fn new(spec: Spec) -> Self {
        assert!(spec.ip != (Ip::V6 { ext: V6Ext::Fragment }), "a TCP flow's frames are not fragments");
        Self {
            spec: Spec { transport: Transport::Tcp, ..spec },
            client_isn: 0x1000_0000,
            server_isn: 0x2000_0000,
            window: 64240,
            timestamps: true,
            client_addr: None,
        }
    }

    /// IPv4 to port 443, no VLAN, no options.
    pub fn v4() -> Self {
        Self::new(Spec::udp4().tcp().dport(443))
    }

    /// IPv6 to port 443, no VLAN, no extension headers.
    pub fn v6() -> Self {
        Self::new(Spec::udp6().tcp().dport(443))
    }

    #[must_use]
    pub fn dport(mut self, port: u16) -> Self {
        self.spec.dport = port;
        self
    }

    #[must_use]
    pub fn sport(mut self, port: u16) -> Self {
        self.spec.sport = port;
        self
    }

    /// Sets both initial sequence numbers (e.g. near 2^32 to test wrapping).
    #[must_use]
    pub fn isns(mut self, client: u32, server: u32) -> Self {
        self.client_isn = client;
        self.server_isn = server;
        self
    }

    /// Segments without TCP options (a 20-byte TCP header).
    #[must_use]
    pub fn without_timestamps(mut self) -> Self {
        self.timestamps = false;
        self
    }

    pub fn client_mac(&self) -> [u8; 6] {
        crate::packet::CLIENT_MAC
    }

    pub fn server_mac(&self) -> [u8; 6] {
        crate::packet::SERVER_MAC
    }

    /// The same flow from another client address (of the flow's IP version):
    /// the frames' source address and the checksums follow.
    #[must_use]
    pub fn with_client_ip(mut self, addr: IpAddr) -> Self {
        assert_eq!(addr.is_ipv6(), matches!(self.spec.ip, Ip::V6 { .. }), "{addr} is not of the flow's IP version");
        self.client_addr = Some(addr);
        self
    }

    pub fn client_ip(&self) -> IpAddr {
        if let Some(addr) = self.client_addr {
            return addr;
        }
        match self.spec.ip {
            Ip::V4 { .. } => Ipv4Addr::from(crate::packet::CLIENT_V4).into(),
            Ip::V6 { .. } => Ipv6Addr::from(crate::packet::CLIENT_V6).into(),
        }
    }

    pub fn server_ip(&self) -> IpAddr {
        match self.spec.ip {
            Ip::V4 { .. } => Ipv4Addr::from(crate::packet::SERVER_V4).into(),
            Ip::V6 { .. } => Ipv6Addr::from(crate::packet::SERVER_V6).into(),
        }
    }

    pub fn client_port(&self) -> u16 {
        self.spec.sport
    }

    pub fn server_port(&self) -> u16 {
        self.spec.dport
    }

    /// The sequence number of stream byte `offset` (`client_isn + 1 + offset`).
    pub fn seq_at(&self, offset: usize) -> u32 {
        self.client_isn.wrapping_add(1).wrapping_add(offset as u32)
    }

    /// What the client's segments acknowledge (`server_isn + 1`): the
    /// sequence number the client expects next from the server, so the one
    /// a RST toward the client must carry (RFC 9293 §3.10.7.4).
    pub fn server_seq(&self) -> u32 {
        self.server_isn.wrapping_add(1)
    }

    /// The client's SYN (MSS 1460, SACK permitted, timestamps if enabled,
    /// window scale 7).
    pub fn syn(&self) -> Vec<u8> {
        let mut tcp = self.tcp_header(self.client_isn);
        tcp.syn = true;
        let mut options =
            vec![TcpOptionElement::MaximumSegmentSize(1460), TcpOptionElement::SelectiveAcknowledgementPermitted];
        if self.timestamps {
            options.push(TcpOptionElement::Timestamp(1, 0));
        }
        options.extend([TcpOptionElement::Noop, TcpOptionElement::WindowScale(7)]);
        tcp.set_options(&options).expect("SYN options fit");
        self.frame(tcp, &[])
    }

    /// The ACK that completes the handshake (no payload).
    pub fn ack(&self) -> Vec<u8> {
        self.ack_at(0)
    }

    /// A pure ACK at stream offset `seq_offset`.
    pub fn ack_at(&self, seq_offset: usize) -> Vec<u8> {
        let mut tcp = self.tcp_header(self.seq_at(seq_offset));
        self.acknowledge(&mut tcp);
        self.frame(tcp, &[])
    }

    /// A PSH/ACK data segment carrying `payload` at stream offset `seq_offset`.
    pub fn segment(&self, seq_offset: usize, payload: &[u8]) -> Vec<u8> {
        let mut tcp = self.tcp_header(self.seq_at(seq_offset));
        self.acknowledge(&mut tcp);
        tcp.psh = true;
        self.frame(tcp, payload)
    }

    /// `stream` cut at `cuts` (strictly increasing offsets inside it) into
    /// consecutive data segments: `cuts = [100]` gives `[0..100]` and
    /// `[100..]`.
    pub fn segments(&self, stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut bounds = vec![0];
        for &c in cuts {
            assert!(
                c > *bounds.last().expect("starts with 0") && c < stream.len(),
                "cuts {cuts:?} must increase strictly inside a {}-byte stream",
                stream.len()
            );
            bounds.push(c);
        }
        bounds.push(stream.len());
        bounds.windows(2).map(|w| self.segment(w[0], &stream[w[0]..w[1]])).collect()
    }

    /// FIN/ACK with nothing sent (stream offset 0).
    pub fn fin(&self) -> Vec<u8> {
        self.fin_at(0)
    }

    /// FIN/ACK after `seq_offset` bytes of stream.
    pub fn fin_at(&self, seq_offset: usize) -> Vec<u8> {
        let mut tcp = self.tcp_header(self.seq_at(seq_offset));
        self.acknowledge(&mut tcp);
        tcp.fin = true;
        self.frame(tcp, &[])
    }

    /// Checks that `rst` is addressed back to this flow's client: MACs,
    /// addresses and ports swapped, the same VLAN ids. Sequence numbers and
    /// flags are the test's to judge.
    pub fn check_reply(&self, rst: &TcpFrame) -> Result<(), String> {
        let want = (
            self.server_mac(),
            self.client_mac(),
            self.spec.vlan_ids(),
            self.server_ip(),
            self.client_ip(),
            self.server_port(),
            self.client_port(),
        );
        let got = (rst.src_mac, rst.dst_mac, rst.vlan_ids.clone(), rst.src, rst.dst, rst.sport, rst.dport);
        if want == got {
            Ok(())
        } else {
            Err(format!("not a reply to the client: want (macs, vlans, ips, ports) {want:?}, got {got:?}"))
        }
    }

    fn tcp_header(&self, seq: u32) -> TcpHeader {
        TcpHeader::new(self.spec.sport, self.spec.dport, seq, self.window)
    }

    fn acknowledge(&self, tcp: &mut TcpHeader) {
        tcp.ack = true;
        tcp.acknowledgment_number = self.server_seq();
        if self.timestamps {
            tcp.set_options(&[TcpOptionElement::Noop, TcpOptionElement::Noop, TcpOptionElement::Timestamp(2, 1)])
                .expect("timestamp option fits");
        }
    }

    /// Frames `tcp` and `payload` with the link and IP headers
    /// [`Spec::build`] writes (taken from a frame it built, so the VLAN and
    /// IP variants are defined once, in `packet.rs`).
    pub fn frame(&self, tcp: TcpHeader, payload: &[u8]) -> Vec<u8> {
        let template = self.spec.build(&[]);
        let h = PacketHeaders::from_ethernet_slice(&template).expect("Spec::build writes a parsable frame");
        let Some(LinkHeader::Ethernet2(eth)) = h.link else { unreachable!("Spec::build writes Ethernet II") };
        let ip = match (h.net, self.client_addr) {
            (Some(NetHeaders::Ipv4(mut h, e)), addr) => {
                if let Some(IpAddr::V4(a)) = addr {
                    h.source = a.octets();
                }
                IpHeaders::Ipv4(h, e)
            }
            (Some(NetHeaders::Ipv6(mut h, e)), addr) => {
                if let Some(IpAddr::V6(a)) = addr {
                    h.source = a.octets();
                }
                IpHeaders::Ipv6(h, e)
            }
            (other, _) => unreachable!("Spec::build writes IP, not {other:?}"),
        };
        let tags: Vec<_> = h
            .link_exts
            .iter()
            .filter_map(|x| match x {
                LinkExtHeader::Vlan(v) => Some(v.clone()),
                LinkExtHeader::Macsec(_) => None,
            })
            .collect();
        let eth = PacketBuilder::ethernet2(eth.source, eth.destination);
        let builder = match tags.as_slice() {
            [] => eth.ip(ip).tcp_header(tcp),
            [one] => eth.vlan(VlanHeader::Single(one.clone())).ip(ip).tcp_header(tcp),
            [outer, inner] => eth
                .vlan(VlanHeader::Double(etherparse::DoubleVlanHeader { outer: outer.clone(), inner: inner.clone() }))
                .ip(ip)
                .tcp_header(tcp),
            more => unreachable!("Spec::build writes at most two tags, not {}", more.len()),
        };
        let mut out = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut out, payload).expect("write frame");
        out
    }
}

/// A TCP segment as [`parse_tcp`] or [`parse_rst`] read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpFrame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// VLAN ids, outermost first.
    pub vlan_ids: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Bytes of IPv4 options or IPv6 extension headers.
    pub ip_ext_len: usize,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// Byte 13 of the TCP header; see [`flags`].
    pub flags: u8,
    pub window: u16,
    /// TCP header length in bytes (20 without options).
    pub tcp_header_len: usize,
    pub payload_len: usize,
    pub payload: Vec<u8>,
    /// Bytes after the end the IP header gives (Ethernet padding or junk).
    pub trailing: usize,
}

/// What [`parse_rst`] returns: a [`TcpFrame`] with RST set.
pub type Rst = TcpFrame;

impl TcpFrame {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }
}

impl fmt::Display for TcpFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} -> {}:{} seq {} ack {} flags {:#04x} win {} len {}",
            self.src, self.sport, self.dst, self.dport, self.seq, self.ack, self.flags, self.window, self.payload_len
        )
    }
}

/// Reads `frame` as a TCP segment with RST set (a frame the program wrote
/// toward the client), checked as by [`parse_tcp`].
pub fn parse_rst(frame: &[u8]) -> Result<Rst, String> {
    let f = parse_tcp(frame)?;
    if f.has(flags::RST) { Ok(f) } else { Err(format!("RST flag not set: {f}")) }
}

/// Reads `frame` as Ethernet (0-2 VLAN tags), IP and TCP, checking what a
/// receiving stack would: the IP lengths fit the frame, the IPv4 header
/// checksum and the TCP checksum (both recomputed here, independently of
/// `maps`' checksum code). The IPv6 pseudo-header uses the header's
/// destination, which is the final one for the frames these tests see (no
/// routing header with segments left).
pub fn parse_tcp(frame: &[u8]) -> Result<TcpFrame, String> {
    let h = PacketHeaders::from_ethernet_slice(frame).map_err(|e| format!("not an Ethernet/IP/TCP frame: {e}"))?;
    let Some(LinkHeader::Ethernet2(eth)) = &h.link else { return Err("no Ethernet II header".into()) };
    let mut vlan_ids = Vec::new();
    for x in &h.link_exts {
        match x {
            LinkExtHeader::Vlan(v) => vlan_ids.push(v.vlan_id.value()),
            LinkExtHeader::Macsec(_) => return Err("MACsec header".into()),
        }
    }
    let l3 = 14 + 4 * vlan_ids.len();
    let (src, dst, ip_header_len, ip_ext_len, ip_end, pseudo) = match &h.net {
        Some(NetHeaders::Ipv4(ip, ext)) => {
            let ihl = ip.header_len();
            let sum = fold(sum16(0, &frame[l3..l3 + ihl]));
            if sum != 0xffff {
                return Err(format!("IPv4 header checksum {:#06x} is wrong (sum {sum:#06x})", ip.header_checksum));
            }
            if ext.auth.is_some() {
                return Err("IPv4 authentication header".into());
            }
            let end = l3 + usize::from(ip.total_len);
            let tcp_len = end - l3 - ihl;
            let mut p = Vec::with_capacity(12);
            p.extend_from_slice(&ip.source);
            p.extend_from_slice(&ip.destination);
            p.extend_from_slice(&[0, 6]);
            p.extend_from_slice(&(tcp_len as u16).to_be_bytes());
            (IpAddr::from(ip.source), IpAddr::from(ip.destination), ihl, ihl - 20, end, p)
        }
        Some(NetHeaders::Ipv6(ip, ext)) => {
            let ext_len = ext.header_len();
            let end = l3 + 40 + usize::from(ip.payload_length);
            let tcp_len = end - l3 - 40 - ext_len;
            let mut p = Vec::with_capacity(40);
            p.extend_from_slice(&ip.source);
            p.extend_from_slice(&ip.destination);
            p.extend_from_slice(&(tcp_len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 6]);
            (IpAddr::from(ip.source), IpAddr::from(ip.destination), 40 + ext_len, ext_len, end, p)
        }
        other => return Err(format!("not IP: {other:?}")),
    };
    let Some(TransportHeader::Tcp(tcp)) = &h.transport else {
        return Err(format!("not TCP: {:?}", h.transport));
    };
    let PayloadSlice::Tcp(payload) = h.payload else { return Err("no TCP payload slice".into()) };
    let segment = &frame[l3 + ip_header_len..ip_end];
    let sum = fold(sum16(sum16(0, &pseudo), segment));
    if sum != 0xffff {
        return Err(format!("TCP checksum {:#06x} is wrong (sum {sum:#06x})", tcp.checksum));
    }
    Ok(TcpFrame {
        src_mac: eth.source,
        dst_mac: eth.destination,
        vlan_ids,
        src,
        dst,
        ip_ext_len,
        sport: tcp.source_port,
        dport: tcp.destination_port,
        seq: tcp.sequence_number,
        ack: tcp.acknowledgment_number,
        flags: segment[13],
        window: tcp.window_size,
        tcp_header_len: tcp.header_len(),
        payload_len: payload.len(),
        payload: payload.to_vec(),
        trailing: frame.len() - ip_end,
    })
}

/// One's-complement sum of 16-bit big-endian words (RFC 1071), unfolded.
fn sum16(mut acc: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}
