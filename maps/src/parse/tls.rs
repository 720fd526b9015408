//! The server_name of a TLS ClientHello, read from a TCP byte stream.
//!
//! A ClientHello may arrive in any number of TCP segments, cut at any byte,
//! and in any number of TLS records (RFC 8446 §5.1: a handshake message may be
//! fragmented across records, and a record header may fall inside any of its
//! fields). A post-quantum ClientHello (X25519MLKEM768 key share) is about
//! 1.9 KB, more than one segment on most paths. So the parser is a state
//! machine over the byte stream: [`TlsState`] is all it remembers between
//! bytes, and the kernel program keeps it per flow between segments.
//!
//! # Calling it
//! [`step`] does one field, then returns. The kernel calls it in a bounded
//! loop over the bytes of each segment copied into a `TLS_BUF` buffer:
//!
//! ```text
//! loop: match step(&mut st, &buf, len, &mut pos) {
//!     Continue       => call again,
//!     NeedMore       => save st; resume at the next segment with pos = 0,
//!     Sni            => judge st.name()[..st.sni_len()]; may call again to learn about ECH,
//!     End            => the ClientHello is over (st.ech(), st.has_sni()),
//!     NotClientHello => not TLS: pass the flow,
//!     Malformed(e)   => count e; fail open or closed,
//! }
//! ```
//!
//! `End`, `NotClientHello` and `Malformed` are sticky: once returned, every
//! later call returns the same outcome again and consumes nothing (the call
//! that first returns one may have consumed the bytes that decided it).
//! `Continue` and `Sni` always consume at least one byte.
//!
//! # What one step does
//! One of: a record header (all five bytes at once when the segment holds
//! them, else one byte); up to four bytes of a big-endian integer field,
//! after skipping what the record and segment hold of the opaque field
//! before it (arithmetic, no loop); or up to [`NAME_CHUNK`] bytes of the
//! name. There is no recursion, every loop has a constant bound, every index
//! is masked to its array's size, and every subtraction is preceded by a
//! check, because the kernel program runs this code under the BPF verifier,
//! which walks every path of `step` once per iteration of the caller's loop.
//!
//! # How many steps
//! A ClientHello takes one step for its record header and the handshake
//! header, five for the fields before the extensions, one per extension
//! (the previous extension's data and this one's header), three more for
//! the name and one to say `End`: 20 calls for rustls's, small or
//! post-quantum, about 28 for a Chromium-like one with 18 extensions, all
//! in one segment; a cut between segments adds one or two; each further
//! record one (its header and data in one step). Whatever the input, every
//! step consumes at least four bytes but for a few, so a segment of `n`
//! bytes that begins `r` records takes at most `n / 4 + r + 14` calls (440
//! for a 1448-byte segment, 366 measured for the worst ClientHello we could
//! build, `worst_case_steps_per_segment`). The kernel makes at most
//! [`SEGMENT_STEPS`] calls per segment: a segment that needs more is not
//! judged.
//!
//! # What is checked
//! Lengths nest: the ClientHello body (24-bit length) holds fixed fields,
//! three vectors and the extensions block; the block holds extensions; the
//! server_name extension holds a server_name_list, which holds entries. Each
//! field's size is claimed from its innermost container when the field
//! begins, and every container was claimed whole from its parent, so no field
//! can overrun any container. Where the protocol says a vector fills its
//! container exactly (the extensions block is the rest of the body, RFC 8446
//! §4.1.2; the server_name_list is the whole extension, RFC 6066 §3, as
//! every server below requires) the parser insists, so the block and the
//! body share one counter, as do the extension and its list. Bytes after the
//! ClientHello message are never looked at.
//!
//! # As lenient as servers
//! A filter is evaded by what a server accepts and the filter refuses: a
//! ClientHello the parser calls malformed is not judged. So the parser
//! accepts whatever any of OpenSSL 3, BoringSSL, Go's crypto/tls or rustls
//! 0.23 accepts on the way to the name (their sources, read for this):
//! - **Record version**: ignored (RFC 8446 §5.1: "MUST be ignored for all
//!   purposes"). OpenSSL (`tls_validate_record_header`, tlsany_meth.c),
//!   BoringSSL (`tls_open_record`) and rustls (`read_opaque_message_header`)
//!   take any 0x03XX on every record of the ClientHello; Go
//!   (`readRecordOrCCS`) takes any version below 0x1000 until it has chosen
//!   one, so 0x0001 or 0x0a0a reach a Go server.
//! - **Record length**: not bounded. OpenSSL and Go take plaintext records
//!   up to 2^14 bytes, rustls up to 2^14 + 2047; a record longer than the
//!   ClientHello hides nothing (the message ends inside it).
//! - **Empty handshake records**: skipped. OpenSSL skips up to 32 in a row
//!   (`MAX_EMPTY_RECORDS`; `ssl3_read_bytes`: "We must have read empty
//!   records. Get more data"); Go and rustls refuse them.
//! - **Any number of records**: no server bounds the records of a
//!   ClientHello (Go only its useless records, OpenSSL only empty ones), so
//!   neither does the parser; its callers bound the work per segment
//!   instead ([`SEGMENT_STEPS`]: 32 records or extensions beyond a real
//!   ClientHello's), and a ClientHello spread over segments is read
//!   whole, its record state carried from one segment to the next.
//! - **server_name_list entries**: Go (`clientHelloMsg.unmarshal`) skips
//!   entries of other name types wherever they are and refuses a second
//!   host_name; rustls (`ServerNamePayload::read`) takes the host_name
//!   entries before the first entry of another type and ignores everything
//!   from that entry on (its length unread), refusing two host_names in a
//!   row; OpenSSL (`tls_parse_ctos_server_name`) and BoringSSL
//!   (`extract_sni`) require exactly one host_name entry. So the parser
//!   takes the host_name wherever it is, skips entries of other types, and
//!   stops reading the list at an entry whose length overruns it or at
//!   fewer than three bytes (no server finds a name past such an entry);
//!   two host_names are [`TlsError::SniTwoHostNames`] (Go, rustls in a row,
//!   OpenSSL and BoringSSL refuse them; rustls takes the first when another
//!   type lies between them). The name is reported when the list ends, so
//!   a second host_name is found before the first one is judged.
//!
//! Not done: Go drops warning alerts (level 1) between and before the
//! records of a ClientHello, up to 16 in a row; here an alert record is
//! [`TlsError::RecordType`] mid-ClientHello and [`Step::NotClientHello`]
//! first. Servers refuse duplicate extensions (Go, OpenSSL, BoringSSL,
//! rustls), so a second server_name is [`TlsError::SniDuplicate`], after
//! the first name was reported.
//!
//! The lengths of legacy_session_id, cipher_suites and
//! legacy_compression_methods are checked against their bounds in RFC 8446
//! §4.1.2, so that a length off by one fails instead of shifting the parse
//! onto another reading that happens to add up. Not checked, because the
//! name does not depend on them: legacy_version and the contents of random,
//! the three vectors and extensions other than server_name.

#![expect(
    clippy::doc_markdown,
    reason = "TLS terms (ClientHello, server_name, host_name) are written as the RFCs write them"
)]

/// Bytes of a segment's payload the kernel copies into scratch memory for
/// the parser. A power of two: indices are masked with `TLS_BUF - 1`.
pub const TLS_BUF: usize = 4096;
/// Longest server_name kept, plus one: DNS names are at most 253 characters
/// as text (254 with a trailing dot). A power of two: indices are masked.
pub const MAX_SNI: usize = 256;
/// Name bytes one [`step`] copies at most.
pub const NAME_CHUNK: usize = 64;

/// The most [`step`] calls a segment may take, the ClientHello's verdict
/// included (and, where the policy reads on past the name for ECH, the
/// steps that read on): the bound on the parse work one packet can cause.
/// A segment that would take more is not judged (the kernel's
/// `tls_segment_bound`, then the `--unjudged` policy), and its flow with
/// it.
///
/// Why 64: real ClientHellos take 20 steps (rustls's, small or
/// post-quantum) to 28 (a Chromium-like one with 18 extensions) in one
/// segment, three more for a 255-byte name, one or two more for a cut
/// between segments; OpenSSL skips up to 32 empty records in a row (a
/// step each). That leaves room for the longest of them with 32 more
/// records or extensions in a segment. Past that, each step costs the kernel about as
/// much as the rest of the ClientHello's path together (a `bpf_loop`
/// iteration of the whole state machine), so the bound is what keeps the
/// worst segment within a few times a plain one: without it a segment of
/// 1448 bytes could take 360 steps (empty extensions) or 290 (records of a
/// byte or two), ten to fifteen times a real ClientHello's cost. A client
/// that needs more (a ClientHello in hundreds of tiny records, as servers
/// accept) can spread them over segments: the bound is per segment, and
/// the parser's state, record layer included, goes on from one to the next.
///
/// `segment_bound` tests both sides of it.
pub const SEGMENT_STEPS: u32 = 64;
const _: () = assert!(SEGMENT_STEPS <= u8::MAX as u32);

/// Bytes of a record header: type, version, 16-bit length (RFC 8446 §5.1).
const RECORD_HEADER: usize = 5;
/// TLS content type of handshake records (RFC 8446 §5.1).
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake type of a ClientHello (RFC 8446 §4).
const CLIENT_HELLO: u32 = 1;
/// Extension types: server_name (RFC 6066 §3) and encrypted_client_hello
/// (draft-ietf-tls-esni).
const EXT_SERVER_NAME: u32 = 0;
const EXT_ECH: u32 = 0xfe0d;
/// legacy_version (2 bytes) and random (32 bytes).
const FIXED_FIELDS: u32 = 34;

// Phases: the field being read. Integer fields (`need` > 0 while they are
// read) are marked `int n`, opaque fields skipped with `field_left` `skip`.
/// Handshake header: msg_type and its 24-bit length (int 4). All zero is the
/// start of a stream: the first record header sets `need`.
const P_HS: u8 = 0;
/// legacy_version and random (skip 34).
const P_FIXED: u8 = 1;
/// legacy_session_id (int 1, then skip).
const P_SID_LEN: u8 = 2;
const P_SID: u8 = 3;
/// cipher_suites (int 2, then skip).
const P_CS_LEN: u8 = 4;
const P_CS: u8 = 5;
/// legacy_compression_methods (int 1, then skip).
const P_CM_LEN: u8 = 6;
const P_CM: u8 = 7;
/// Length of the extensions block (int 2).
const P_EXTS_LEN: u8 = 8;
/// An extension's type and length (int 4).
const P_EXT_HDR: u8 = 9;
/// An extension's data other than server_name's (skip).
const P_EXT: u8 = 10;
/// server_name_list length (int 2).
const P_SNI_LIST: u8 = 11;
/// An entry's name_type and length (int 3).
const P_SNI_ENTRY: u8 = 12;
/// host_name bytes (copied into `name`).
const P_SNI_NAME: u8 = 13;
/// An entry of another name_type, or the rest of a list no server reads on
/// (skip).
const P_SNI_SKIP: u8 = 14;
/// Terminal phases.
const P_END: u8 = 15;
const P_NOT_CH: u8 = 16;
const P_FAILED: u8 = 17;

/// `flags` bits.
const F_ECH: u8 = 1;
/// A server_name extension was seen (a second one is an error).
const F_SNI_SEEN: u8 = 2;
/// The host_name is complete in `name` and its list read to the end:
/// [`Step::Sni`] is returned by the step that sets it.
const F_SNI_DONE: u8 = 4;
/// A host_name entry was copied into `name`; the rest of its list is read
/// before it is reported (a second host_name is an error).
const F_HOST_NAME: u8 = 8;

/// The parser's whole state between bytes.
///
/// Lives in BPF map values (the per-flow `FLOWS` hash map between segments, per-CPU
/// scratch while a segment is parsed), so it is `#[repr(C)]`, made only of
/// integers and byte arrays with its padding spelled out, and all zero is a
/// valid value: the start of a stream, like [`TlsState::new`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsState {
    /// Where the parser is.
    fields: Fields,
    /// The host_name as sent: `sni_len` bytes, case and all.
    pub name: [u8; MAX_SNI],
}

/// The parser's integers: what [`step`] reads afresh from memory each time
/// (see [`step`] on the verifier).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fields {
    /// Bytes of the ClientHello body not yet claimed by a field; once the
    /// extensions block begins, bytes of the block after the current extension.
    hs_left: u32,
    /// Integer field being read, big-endian, up to four bytes.
    acc: u32,
    /// Bytes left in the current record; 0 when a record header comes next.
    rec_left: u16,
    /// Bytes of the server_name_list not yet claimed by an entry.
    ext_left: u16,
    /// Bytes left in the opaque field being skipped or the name being copied.
    field_left: u16,
    /// Bytes of the name copied so far.
    sni_len: u16,
    /// The field being read: one of the `P_*` constants.
    phase: u8,
    /// Bytes of the integer field still to read.
    need: u8,
    /// Bytes of a record header read so far (it may be split across segments).
    hdr: u8,
    /// Records begun, up to 255 (0: the stream's first record is next).
    records: u8,
    /// `F_*` bits.
    flags: u8,
    /// [`TlsError`] code once `phase` is `P_FAILED`.
    err: u8,
    /// High byte of a record length whose low byte is in the next segment.
    rec_len_hi: u8,
    /// Explicit padding; always 0.
    pad: u8,
}

const _: () = assert!(core::mem::size_of::<Fields>() == 24);

impl Fields {
    /// All zero but the phase, which is zero too: the start of a stream.
    const START: Fields = Fields {
        hs_left: 0,
        acc: 0,
        rec_left: 0,
        ext_left: 0,
        field_left: 0,
        sni_len: 0,
        phase: P_HS,
        need: 0,
        hdr: 0,
        records: 0,
        flags: 0,
        err: 0,
        rec_len_hi: 0,
        pad: 0,
    };
}
const _: () = assert!(core::mem::size_of::<TlsState>() == 24 + MAX_SNI);
const _: () = assert!(MAX_SNI.is_power_of_two() && TLS_BUF.is_power_of_two());
// A name is at most 255 bytes, so `sni_len + n` never passes the buffer.
const _: () = assert!(MAX_SNI - 1 <= u8::MAX as usize);

impl TlsState {
    /// The start of a stream.
    pub const fn new() -> Self {
        Self { fields: Fields::START, name: [0; MAX_SNI] }
    }

    /// Back to the start of a stream, leaving `name`'s bytes as they are
    /// (only its first `sni_len` bytes mean anything): cheaper than storing
    /// [`TlsState::new`], which the kernel program does with a byte loop.
    #[inline(always)]
    pub fn reset(&mut self) {
        self.fields = Fields::START;
    }

    /// The host_name (complete once [`Step::Sni`] was returned, see [`Self::has_sni`]).
    pub fn name(&self) -> &[u8] {
        self.name.get(..self.sni_len()).unwrap_or(&[])
    }

    /// Whether an encrypted_client_hello extension (0xfe0d) was seen so far.
    pub fn ech(&self) -> bool {
        self.fields.flags & F_ECH != 0
    }

    /// Whether the host_name is complete in `name`.
    pub fn has_sni(&self) -> bool {
        self.fields.flags & F_SNI_DONE != 0
    }

    /// Bytes of the ClientHello still to come at the least, from where the
    /// parser stands (record headers that may come between them not
    /// counted): a segment starting closer than this past the bytes parsed
    /// carries ClientHello bytes. 0 before the handshake length is read.
    pub const fn min_left(&self) -> u32 {
        match self.fields.phase {
            P_HS | P_END | P_NOT_CH | P_FAILED => 0,
            _ => self.fields.hs_left.saturating_add(self.fields.field_left as u32),
        }
    }

    /// Bytes of `name` that hold the host_name.
    pub fn sni_len(&self) -> usize {
        (self.fields.sni_len as usize) & (MAX_SNI - 1)
    }

    /// [`Self::ech`] and [`Self::sni_len`] read with volatile loads, for the
    /// kernel program after `bpf_loop`: its callbacks change the state
    /// through their own map lookup, behind the back of the caller's
    /// reference, so plain reads could be answered from before the loop.
    ///
    /// # Safety
    /// `this` points to a valid `TlsState`.
    #[inline(always)]
    pub unsafe fn ech_and_sni_len(this: *const Self) -> (bool, usize) {
        // SAFETY: the caller's pointer; two plain integer fields.
        let (flags, len) = unsafe {
            (
                core::ptr::read_volatile(&raw const (*this).fields.flags),
                core::ptr::read_volatile(&raw const (*this).fields.sni_len),
            )
        };
        (flags & F_ECH != 0, (len as usize) & (MAX_SNI - 1))
    }

    /// Bytes at the start of a `TlsState` that [`Self::reset`] rewrites:
    /// the parser's integers. The kernel program zeroes them with volatile
    /// word stores (all zero is the start of a stream).
    pub const RESET_BYTES: usize = core::mem::size_of::<Fields>();
}

impl Default for TlsState {
    fn default() -> Self {
        Self::new()
    }
}

/// What one call of [`step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Consumed bytes; call again.
    Continue,
    /// Every byte of the segment is consumed (`*pos == len`) and the
    /// ClientHello goes on: keep the state, resume with the next segment.
    NeedMore,
    /// The host_name is complete in [`TlsState::name`]. Calling again goes on
    /// with the remaining extensions and ends with `End` (or `Malformed`:
    /// the name is reported as soon as it is complete, before the rest of the
    /// ClientHello is checked).
    Sni,
    /// The ClientHello is complete; [`TlsState::ech`] and
    /// [`TlsState::has_sni`] say what it held. Sticky.
    End,
    /// The stream does not start with a TLS handshake record carrying a
    /// ClientHello: its first byte is not 22 or its handshake type is not 1
    /// (the record version is ignored, see the module docs). Returned at the
    /// first byte that proves it. Sticky.
    NotClientHello,
    /// A TLS handshake stream whose structure is inconsistent. Sticky.
    Malformed(TlsError),
}

/// [`Step::code`] of `Continue`.
pub const STEP_CONTINUE: u64 = 0;
/// [`Step::code`] of `Malformed(e)` is this plus `e`'s code.
const STEP_MALFORMED: u64 = 0x100;

impl Step {
    /// The outcome as an integer, to pass it through map memory (a `bpf_loop`
    /// callback's result): `Continue` 0, `NeedMore` 1, `Sni` 2, `End` 3,
    /// `NotClientHello` 4, `Malformed(e)` 0x100 + `e as u8`.
    #[inline(always)]
    pub const fn code(self) -> u64 {
        match self {
            Step::Continue => STEP_CONTINUE,
            Step::NeedMore => 1,
            Step::Sni => 2,
            Step::End => 3,
            Step::NotClientHello => 4,
            Step::Malformed(e) => STEP_MALFORMED + e as u64,
        }
    }

    /// The outcome whose [`Step::code`] is `code`; an unknown code is
    /// `Malformed(TooLong)`, a caller's own failure.
    #[inline(always)]
    pub const fn from_code(code: u64) -> Step {
        match code {
            STEP_CONTINUE => Step::Continue,
            1 => Step::NeedMore,
            2 => Step::Sni,
            3 => Step::End,
            4 => Step::NotClientHello,
            _ => {
                let e = if code > STEP_MALFORMED && code <= STEP_MALFORMED + 0xff {
                    TlsError::from_code((code - STEP_MALFORMED) as u8)
                } else {
                    None
                };
                Step::Malformed(match e {
                    Some(e) => e,
                    None => TlsError::TooLong,
                })
            }
        }
    }
}

/// Why a ClientHello was rejected. The discriminant (from 1) is the code kept
/// in [`TlsState`] and a stable index for counters.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsError {
    /// A record after the first is not a handshake record (22) although the
    /// ClientHello is not complete: an alert, change_cipher_spec or
    /// application data in its middle.
    RecordType = 1,
    /// A length that does not fit its container (a vector or extension
    /// longer than what is left of the body or block, a body too short for
    /// its fixed fields, a block or list ending inside a field), that does
    /// not fill it exactly where the protocol says it must (the extensions
    /// block and the rest of the body, the server_name_list and its
    /// extension), a host_name longer than what is left of its list, or that
    /// the protocol forbids (a session id over 32 bytes, no or an odd number
    /// of cipher suite bytes, no compression method).
    LengthMismatch,
    /// A host_name longer than `MAX_SNI - 1` (255) bytes.
    SniTooLong,
    /// An empty server_name_list or host_name (both are `<1..2^16-1>`).
    SniEmpty,
    /// A second server_name extension (RFC 8446 §4.2: at most one of each).
    SniDuplicate,
    /// A second host_name entry in the server_name_list (RFC 6066 §3: "MUST
    /// NOT contain more than one name of the same name_type"): which one a
    /// server would take is not known (rustls takes the first past an entry
    /// of another type, the others refuse the ClientHello), so neither is judged.
    SniTwoHostNames,
    /// Never returned by [`step`]: for callers that stop following a
    /// ClientHello they cannot afford (a segment longer than [`TLS_BUF`]),
    /// so that one code covers it.
    TooLong,
}

impl TlsError {
    /// Every error, in code order.
    pub const ALL: [TlsError; 7] = [
        TlsError::RecordType,
        TlsError::LengthMismatch,
        TlsError::SniTooLong,
        TlsError::SniEmpty,
        TlsError::SniDuplicate,
        TlsError::SniTwoHostNames,
        TlsError::TooLong,
    ];

    /// The error whose code is `code`, if any.
    #[inline(always)]
    pub const fn from_code(code: u8) -> Option<TlsError> {
        Some(match code {
            1 => TlsError::RecordType,
            2 => TlsError::LengthMismatch,
            3 => TlsError::SniTooLong,
            4 => TlsError::SniEmpty,
            5 => TlsError::SniDuplicate,
            6 => TlsError::SniTwoHostNames,
            7 => TlsError::TooLong,
            _ => return None,
        })
    }
}

/// Runs one step of the parser over `buf[*pos..len]`, the bytes of the
/// current segment not consumed yet, and advances `*pos` past what it
/// consumed. `len` is clamped to [`TLS_BUF`]. See the module docs and
/// [`Step`] for the outcomes.
///
/// # The verifier
/// The kernel calls this in a loop, and LLVM would keep the parser's
/// integers in registers from one call to the next: the verifier would then
/// know them, and walk each call once per reachable parser state, far past
/// its budget. So they are read from memory with a volatile load at each call
/// and stored back at its end: every call starts from values the verifier
/// cannot know, its paths join at the caller's loop head, and it is checked
/// about once per iteration. Callers keep `st` and `pos` in map memory (the
/// stack is tracked precisely, map values are not).
#[inline(always)]
pub fn step(st: &mut TlsState, buf: &[u8; TLS_BUF], len: usize, pos: &mut usize) -> Step {
    // SAFETY: both pointers come from references: valid, aligned, and to
    // plain integers.
    let (mut fields, mut at) =
        unsafe { (core::ptr::read_volatile(&raw const st.fields), core::ptr::read_volatile(pos)) };
    let out = step_fields(&mut fields, &mut st.name, buf, len, &mut at);
    st.fields = fields;
    *pos = at;
    out
}

/// [`step`] on the parser's integers held in registers: `Sni` from the
/// step that finished the server_name_list holding a host_name, whatever
/// it went on to read (the next step returns what it came to).
#[inline(always)]
fn step_fields(st: &mut Fields, name: &mut [u8; MAX_SNI], buf: &[u8; TLS_BUF], len: usize, pos: &mut usize) -> Step {
    let before = st.flags;
    let out = step_once(st, name, buf, len, pos);
    if st.flags & !before & F_SNI_DONE != 0 { Step::Sni } else { out }
}

/// One step; see [`step_fields`].
#[inline(always)]
fn step_once(st: &mut Fields, name: &mut [u8; MAX_SNI], buf: &[u8; TLS_BUF], len: usize, pos: &mut usize) -> Step {
    if let Some(done) = terminal(st) {
        return done;
    }
    let len = if len < TLS_BUF { len } else { TLS_BUF };
    let mut at = *pos;
    if at >= len {
        return Step::NeedMore;
    }
    if st.rec_left == 0 {
        let n = record_header(st, buf, at, len - at);
        *pos = at + n;
        if let Some(done) = terminal(st) {
            return done;
        }
        // A whole header, of a record with data in this segment: its data
        // in the same step, so that a ClientHello in tiny records costs a
        // step per record, not two. A header read byte by byte (cut by
        // the segment) or an empty record ends the step.
        if n != RECORD_HEADER || st.rec_left == 0 || *pos >= len {
            return more(*pos, len);
        }
        at = *pos;
    }
    let seg = len - at;
    let rec = st.rec_left as usize;
    let avail = if seg < rec { seg } else { rec };
    if st.phase == P_SNI_NAME {
        let (used, complete) = take_name(st, name, buf, at, avail);
        consume(st, pos, at, used);
        if complete {
            st.flags |= F_HOST_NAME;
            next_entry(st);
        }
        return match terminal(st) {
            Some(done) => done,
            None => more(*pos, len),
        };
    }
    let mut used = 0;
    if st.need == 0 {
        // An opaque field: skip what this record and segment hold of it,
        // then read on into the integer field that follows, so a typical
        // extension (its data, the next one's header) takes one step.
        let (n, complete) = take_opaque(st, avail);
        used = n;
        if complete {
            after_opaque(st);
        }
        if !complete || used == avail || st.need == 0 {
            // Out of bytes, or the ClientHello ended or failed.
            consume(st, pos, at, used);
            return match terminal(st) {
                Some(done) => done,
                None => more(*pos, len),
            };
        }
    } else if st.phase == P_HS && st.need == 4 && byte(buf, at) as u32 != CLIENT_HELLO {
        // The first byte of the stream's first handshake message: reject
        // ordinary traffic as early as possible.
        st.phase = P_NOT_CH;
        return Step::NotClientHello;
    }
    let (n, complete) = take_int(st, buf, at + used, avail - used);
    consume(st, pos, at, used + n);
    if complete {
        advance(st);
    }
    match terminal(st) {
        Some(done) => done,
        None => more(*pos, len),
    }
}

/// Moves `*pos` past the `used` bytes consumed from `at`, which the current
/// record held (`used <= rec_left`, by construction of `avail`).
#[inline(always)]
fn consume(st: &mut Fields, pos: &mut usize, at: usize, used: usize) {
    *pos = at + used;
    st.rec_left -= used as u16;
}

/// Feeds a whole slice (any length, copied through a [`TLS_BUF`] buffer in
/// chunks) and returns the first outcome other than `Continue` and
/// `NeedMore`, or `NeedMore` when the slice ran out first. A host
/// convenience: the bytes after the outcome are not fed, so to go on after
/// `Sni`, drive [`step`] directly.
#[cfg(not(target_arch = "bpf"))]
pub fn feed(st: &mut TlsState, data: &[u8]) -> Step {
    let mut buf = [0u8; TLS_BUF];
    if data.is_empty() {
        return step(st, &buf, 0, &mut 0);
    }
    for chunk in data.chunks(TLS_BUF) {
        buf[..chunk.len()].copy_from_slice(chunk);
        let mut pos = 0;
        loop {
            match step(st, &buf, chunk.len(), &mut pos) {
                Step::Continue => {}
                Step::NeedMore => break,
                done => return done,
            }
        }
    }
    Step::NeedMore
}

/// The sticky outcome of a finished stream, if it is finished.
#[inline(always)]
fn terminal(st: &Fields) -> Option<Step> {
    match st.phase {
        P_END => Some(Step::End),
        P_NOT_CH => Some(Step::NotClientHello),
        P_FAILED => Some(Step::Malformed(match TlsError::from_code(st.err) {
            Some(e) => e,
            None => TlsError::LengthMismatch,
        })),
        _ => None,
    }
}

/// `NeedMore` when the segment is used up, else `Continue`.
#[inline(always)]
fn more(pos: usize, len: usize) -> Step {
    if pos >= len { Step::NeedMore } else { Step::Continue }
}

#[inline(always)]
fn byte(buf: &[u8; TLS_BUF], i: usize) -> u8 {
    buf[i & (TLS_BUF - 1)]
}

/// Ends the stream with `e`.
#[inline(always)]
fn fail(st: &mut Fields, e: TlsError) -> bool {
    st.phase = P_FAILED;
    st.err = e as u8;
    false
}

/// Ends the stream with `e`, or as not TLS at all when this is the first
/// record's header.
#[inline(always)]
fn reject(st: &mut Fields, e: TlsError) -> bool {
    if st.records == 0 {
        st.phase = P_NOT_CH;
        false
    } else {
        fail(st, e)
    }
}

/// Reads a record header at `at` (`seg` bytes of the segment left, at least
/// one): all five bytes when the segment holds them and none was read yet,
/// else one. Returns the bytes consumed; a rejected header ends the stream.
#[inline(always)]
fn record_header(st: &mut Fields, buf: &[u8; TLS_BUF], at: usize, seg: usize) -> usize {
    if st.hdr == 0 && seg >= RECORD_HEADER {
        // Straight-line with constant indices, so each `header_byte` folds to
        // its own check.
        let ok = header_byte(st, 0, byte(buf, at))
            && header_byte(st, 1, byte(buf, at + 1))
            && header_byte(st, 2, byte(buf, at + 2))
            && header_byte(st, 3, byte(buf, at + 3))
            && header_byte(st, 4, byte(buf, at + 4));
        return if ok { RECORD_HEADER } else { 0 };
    }
    header_byte(st, st.hdr, byte(buf, at));
    1
}

/// Takes byte `i` of a record header (RFC 8446 §5.1: type, version, 16-bit
/// length). Returns false when the header is rejected: only a type other
/// than handshake is (the version and length are taken as they come, and
/// an empty record is skipped; see the module docs for why).
#[inline(always)]
fn header_byte(st: &mut Fields, i: u8, b: u8) -> bool {
    match i {
        0 => {
            if b != CONTENT_HANDSHAKE {
                return reject(st, TlsError::RecordType);
            }
        }
        // legacy_record_version.
        1 | 2 => {}
        3 => st.rec_len_hi = b,
        _ => {
            let len = (st.rec_len_hi as u16) << 8 | b as u16;
            if st.records == 0 {
                // The stream's first bytes of handshake data: the ClientHello's header.
                st.need = 4;
            }
            st.records = st.records.saturating_add(1);
            st.rec_left = len;
            st.hdr = 0;
            return true;
        }
    }
    st.hdr = i + 1;
    true
}

/// Reads up to `avail` bytes of the integer field. Returns the bytes
/// consumed and whether the field is complete (its value in `acc`).
#[inline(always)]
fn take_int(st: &mut Fields, buf: &[u8; TLS_BUF], at: usize, avail: usize) -> (usize, bool) {
    let mut acc = st.acc;
    let mut need = st.need as usize;
    let mut n = 0;
    // Fields are at most four bytes.
    while n < 4 {
        if need == 0 || n >= avail {
            break;
        }
        acc = acc << 8 | byte(buf, at + n) as u32;
        need -= 1;
        n += 1;
    }
    st.acc = acc;
    st.need = need as u8;
    (n, need == 0)
}

/// Skips up to `avail` bytes of the opaque field.
#[inline(always)]
fn take_opaque(st: &mut Fields, avail: usize) -> (usize, bool) {
    let left = st.field_left as usize;
    let n = if avail < left { avail } else { left };
    st.field_left = (left - n) as u16;
    (n, n == left)
}

/// Copies up to `avail` (and at most [`NAME_CHUNK`]) bytes of the host_name.
#[inline(always)]
fn take_name(st: &mut Fields, name: &mut [u8; MAX_SNI], buf: &[u8; TLS_BUF], at: usize, avail: usize) -> (usize, bool) {
    let left = st.field_left as usize;
    let n = if avail < left { avail } else { left };
    let n = if n < NAME_CHUNK { n } else { NAME_CHUNK };
    let base = st.sni_len as usize;
    let mut k = 0;
    while k < NAME_CHUNK {
        if k >= n {
            break;
        }
        name[(base + k) & (MAX_SNI - 1)] = byte(buf, at + k);
        k += 1;
    }
    // base + left <= 255: the name's length was checked when it began.
    st.sni_len = (base + n) as u16;
    st.field_left = (left - n) as u16;
    (n, n == left)
}

/// Claims `n` bytes of the ClientHello body (or extensions block) for a field.
#[inline(always)]
fn claim(st: &mut Fields, n: u32) -> bool {
    if n > st.hs_left {
        return false;
    }
    st.hs_left -= n;
    true
}

/// Claims `n` bytes of the current extension for a field.
#[inline(always)]
fn claim_ext(st: &mut Fields, n: u32) -> bool {
    if n > st.ext_left as u32 {
        return false;
    }
    st.ext_left -= n as u16;
    true
}

/// Begins an integer field of `width` bytes.
#[inline(always)]
fn begin_int(st: &mut Fields, phase: u8, width: u8) {
    st.phase = phase;
    st.need = width;
    st.acc = 0;
}

/// Begins an integer field of the body (or extensions block).
#[inline(always)]
fn body_int(st: &mut Fields, phase: u8, width: u8) {
    if claim(st, width as u32) {
        begin_int(st, phase, width);
    } else {
        fail(st, TlsError::LengthMismatch);
    }
}

/// Begins skipping `n` (> 0) bytes.
#[inline(always)]
fn begin_opaque(st: &mut Fields, phase: u8, n: u32) {
    st.phase = phase;
    st.field_left = n as u16;
}

/// After legacy_compression_methods: the extensions block, if the body goes on.
#[inline(always)]
fn after_methods(st: &mut Fields) {
    if st.hs_left == 0 {
        // No extensions at all (allowed before TLS 1.3): no name.
        st.phase = P_END;
    } else {
        body_int(st, P_EXTS_LEN, 2);
    }
}

/// After an extension: the next one, or the end of the ClientHello.
#[inline(always)]
fn next_extension(st: &mut Fields) {
    if st.hs_left == 0 {
        st.phase = P_END;
    } else {
        body_int(st, P_EXT_HDR, 4);
    }
}

/// The integer field of the current phase is complete (its value in
/// `acc`): decide what comes next.
#[inline(always)]
fn advance(st: &mut Fields) {
    let v = st.acc;
    match st.phase {
        P_HS => {
            // The type byte was checked when it arrived.
            st.hs_left = v & 0x00ff_ffff;
            if claim(st, FIXED_FIELDS) {
                begin_opaque(st, P_FIXED, FIXED_FIELDS);
            } else {
                fail(st, TlsError::LengthMismatch);
            }
        }
        P_SID_LEN | P_CS_LEN | P_CM_LEN => {
            if !vector_len_ok(st.phase, v) || !claim(st, v) {
                fail(st, TlsError::LengthMismatch);
            } else if v != 0 {
                // The vector's bytes: the phase after its length's.
                begin_opaque(st, st.phase + 1, v);
            } else {
                // Nothing to skip: what follows the vector.
                st.phase += 1;
                after_opaque(st);
            }
        }
        P_EXTS_LEN => {
            if v == st.hs_left {
                next_extension(st);
            } else {
                fail(st, TlsError::LengthMismatch);
            }
        }
        P_EXT_HDR => extension(st, v >> 16, v & 0xffff),
        P_SNI_LIST => {
            if v != st.ext_left as u32 {
                fail(st, TlsError::LengthMismatch);
            } else if v == 0 {
                fail(st, TlsError::SniEmpty);
            } else {
                next_entry(st);
            }
        }
        // P_SNI_ENTRY; opaque phases never get here.
        _ => entry(st, v >> 16, v & 0xffff),
    }
}

/// Whether a vector of the body may have `len` bytes (RFC 8446 §4.1.2):
/// legacy_session_id<0..32>, cipher_suites<2..2^16-2> of two-byte suites,
/// legacy_compression_methods<1..2^8-1>. A length off by one then fails
/// here rather than shifting the parse onto another consistent reading.
#[inline(always)]
fn vector_len_ok(phase: u8, len: u32) -> bool {
    match phase {
        P_SID_LEN => len <= 32,
        P_CS_LEN => len != 0 && len & 1 == 0,
        _ => len != 0,
    }
}

/// The opaque field of the current phase is skipped (or was empty): what
/// follows it.
#[inline(always)]
fn after_opaque(st: &mut Fields) {
    match st.phase {
        P_FIXED => body_int(st, P_SID_LEN, 1),
        P_SID => body_int(st, P_CS_LEN, 2),
        P_CS => body_int(st, P_CM_LEN, 1),
        P_CM => after_methods(st),
        P_SNI_SKIP => next_entry(st),
        // P_EXT.
        _ => next_extension(st),
    }
}

/// An extension header: `len` bytes of type `typ` follow.
#[inline(always)]
fn extension(st: &mut Fields, typ: u32, len: u32) {
    if typ == EXT_ECH {
        st.flags |= F_ECH;
    }
    if !claim(st, len) {
        fail(st, TlsError::LengthMismatch);
    } else if typ == EXT_SERVER_NAME {
        if st.flags & F_SNI_SEEN != 0 {
            fail(st, TlsError::SniDuplicate);
            return;
        }
        st.flags |= F_SNI_SEEN;
        // len <= 65535: it was read from two bytes.
        st.ext_left = len as u16;
        if claim_ext(st, 2) {
            begin_int(st, P_SNI_LIST, 2);
        } else {
            fail(st, TlsError::LengthMismatch);
        }
    } else if len != 0 {
        begin_opaque(st, P_EXT, len);
    } else {
        next_extension(st);
    }
}

/// The next entry of the server_name_list, or its end. Fewer than three
/// bytes cannot hold an entry's header: no server reads a name there (Go
/// refuses the list, rustls ignores them after an entry of another type),
/// so they are skipped.
#[inline(always)]
fn next_entry(st: &mut Fields) {
    let left = st.ext_left as u32;
    if left == 0 {
        end_of_list(st);
    } else if claim_ext(st, 3) {
        begin_int(st, P_SNI_ENTRY, 3);
    } else {
        skip_list(st);
    }
}

/// Skips the rest of the server_name_list.
#[inline(always)]
fn skip_list(st: &mut Fields) {
    let left = st.ext_left as u32;
    st.ext_left = 0;
    if left == 0 {
        end_of_list(st);
    } else {
        begin_opaque(st, P_SNI_SKIP, left);
    }
}

/// The server_name_list is read: its host_name, if it had one, is reported
/// (by [`step_fields`]), and the next extension follows.
#[inline(always)]
fn end_of_list(st: &mut Fields) {
    if st.flags & F_HOST_NAME != 0 {
        st.flags |= F_SNI_DONE;
    }
    next_extension(st);
}

/// A server_name entry: `len` bytes of type `typ` follow (RFC 6066 §3). A
/// host_name is copied; an entry of another type is skipped (Go), or, when
/// its length overruns the list, the rest of the list is (rustls stops
/// reading at such an entry, Go refuses the list).
#[inline(always)]
fn entry(st: &mut Fields, typ: u32, len: u32) {
    let left = st.ext_left as u32;
    if typ != 0 {
        if len > left {
            skip_list(st);
        } else if len == 0 {
            next_entry(st);
        } else {
            st.ext_left = (left - len) as u16;
            begin_opaque(st, P_SNI_SKIP, len);
        }
    } else if st.flags & F_HOST_NAME != 0 {
        fail(st, TlsError::SniTwoHostNames);
    } else if len > left {
        fail(st, TlsError::LengthMismatch);
    } else if len == 0 {
        fail(st, TlsError::SniEmpty);
    } else if len > (MAX_SNI - 1) as u32 {
        fail(st, TlsError::SniTooLong);
    } else {
        st.ext_left = (left - len) as u16;
        st.sni_len = 0;
        begin_opaque(st, P_SNI_NAME, len);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::{borrow::ToOwned, boxed::Box, string::String, sync::Arc, vec, vec::Vec};

    use rand::{Rng, SeedableRng, rngs::StdRng};
    use rustls::{
        ClientConfig, ClientConnection, RootCertStore,
        client::{EchGreaseConfig, EchMode},
        crypto::{CryptoProvider, aws_lc_rs, hpke::HpkePublicKey},
        pki_types::ServerName,
        server::Acceptor,
    };

    use super::*;

    /// What a stream of segments made the parser say.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Outcome {
        /// Every outcome but `Continue` and `NeedMore`, in order.
        steps: Vec<Step>,
        /// The name as it was when `Sni` was returned.
        name: Option<Vec<u8>>,
        ech: bool,
        /// Whether the stream ended while the parser still wanted bytes.
        need_more: bool,
    }

    /// Runs the parser over `segments` the way the kernel does, checking the
    /// contract of every step: what it consumed, and that sticky outcomes
    /// stick. Returns the outcome and the number of `step` calls.
    fn run(segments: &[&[u8]]) -> (Outcome, usize) {
        let mut st = TlsState::new();
        let mut out = Outcome { steps: Vec::new(), name: None, ech: false, need_more: false };
        let mut calls = 0;
        let mut buf = Box::new([0u8; TLS_BUF]);
        'segments: for seg in segments {
            assert!(seg.len() <= TLS_BUF);
            buf.fill(0xa5);
            buf[..seg.len()].copy_from_slice(seg);
            let mut pos = 0;
            loop {
                let before = pos;
                let s = step(&mut st, &buf, seg.len(), &mut pos);
                calls += 1;
                assert!(pos <= seg.len());
                match s {
                    Step::Continue | Step::Sni => assert!(pos > before, "{s:?} consumed nothing"),
                    Step::NeedMore => assert_eq!(pos, seg.len()),
                    Step::End | Step::NotClientHello | Step::Malformed(_) => {
                        // The call that decides may have consumed the deciding
                        // bytes; later calls consume nothing.
                        let mut again = pos;
                        assert_eq!(step(&mut st, &buf, seg.len(), &mut again), s, "not sticky");
                        assert_eq!(again, pos);
                    }
                }
                match s {
                    Step::Continue => {}
                    Step::NeedMore => continue 'segments,
                    Step::Sni => {
                        assert!(st.has_sni());
                        assert!(st.sni_len() > 0 && st.sni_len() < MAX_SNI);
                        out.name = Some(st.name().to_vec());
                        out.steps.push(s);
                    }
                    _ => {
                        out.steps.push(s);
                        break 'segments;
                    }
                }
            }
        }
        out.need_more = !matches!(out.steps.last(), Some(Step::End | Step::NotClientHello | Step::Malformed(_)));
        out.ech = st.ech();
        if out.steps.contains(&Step::End) {
            assert_eq!(st.has_sni(), out.name.is_some());
        }
        (out, calls)
    }

    fn whole(data: &[u8]) -> Outcome {
        let pieces: Vec<&[u8]> = data.chunks(TLS_BUF).collect();
        run(&pieces).0
    }

    /// Runs `data` cut at the given offsets.
    fn cut(data: &[u8], cuts: &[usize]) -> Outcome {
        let mut pieces = Vec::new();
        let mut from = 0;
        for &c in cuts {
            pieces.push(&data[from..c]);
            from = c;
        }
        pieces.push(&data[from..]);
        run(&pieces).0
    }

    /// `data` in random pieces of 1 to `max` bytes.
    fn random_cuts(rng: &mut StdRng, len: usize, max: usize) -> Vec<usize> {
        let mut cuts = Vec::new();
        let mut at = 0;
        loop {
            at += rng.random_range(1..=max);
            if at >= len {
                return cuts;
            }
            cuts.push(at);
        }
    }

    /// Checks that the reference reads `data` as `want` and that every way
    /// of cutting it into segments says the same as feeding it whole: every two-way cut, `threes` random three-way
    /// cuts, and `manys` random cuts into many pieces.
    fn assert_cuts_agree(data: &[u8], want: &Outcome, rng: &mut StdRng, threes: usize, manys: usize) {
        assert_eq!(&reference(data), want, "the reference disagrees");
        for c in 0..=data.len() {
            assert_eq!(&cut(data, &[c]), want, "cut at {c}");
        }
        for _ in 0..threes {
            let mut c = [rng.random_range(0..=data.len()), rng.random_range(0..=data.len())];
            c.sort_unstable();
            assert_eq!(&cut(data, &c), want, "cuts at {c:?}");
        }
        for _ in 0..manys {
            let max = *[1, 2, 3, 7, 50, 400].get(rng.random_range(0..6)).unwrap();
            let c = random_cuts(rng, data.len(), max);
            assert_eq!(&cut(data, &c), want, "cuts at {c:?}");
        }
    }

    fn sni(name: &[u8], ech: bool) -> Outcome {
        Outcome { steps: vec![Step::Sni, Step::End], name: Some(name.to_vec()), ech, need_more: false }
    }

    fn failed(steps: &[Step]) -> Outcome {
        Outcome { steps: steps.to_vec(), name: None, ech: false, need_more: false }
    }

    // --- ClientHellos from rustls -----------------------------------------

    #[derive(Clone, Copy, Debug)]
    enum Kind {
        /// X25519 only: a ClientHello of about 250 bytes.
        Small,
        /// X25519MLKEM768 first, as rustls prefers: about 1.9 KB.
        PostQuantum,
        /// Post-quantum with a GREASE encrypted_client_hello extension.
        Ech,
    }

    const KINDS: [Kind; 3] = [Kind::Small, Kind::PostQuantum, Kind::Ech];

    fn provider(kind: Kind) -> CryptoProvider {
        let mut p = aws_lc_rs::default_provider();
        p.kx_groups = match kind {
            Kind::Small => vec![aws_lc_rs::kx_group::X25519],
            Kind::PostQuantum | Kind::Ech => vec![aws_lc_rs::kx_group::X25519MLKEM768, aws_lc_rs::kx_group::X25519],
        };
        p
    }

    /// The bytes a rustls client sends first, for `name`, in records of at
    /// most `fragment` bytes.
    fn rustls_hello(name: &str, kind: Kind, fragment: Option<usize>) -> Vec<u8> {
        let builder = ClientConfig::builder_with_provider(Arc::new(provider(kind)));
        let builder = match kind {
            Kind::Ech => {
                let grease = EchGreaseConfig::new(
                    aws_lc_rs::hpke::DH_KEM_X25519_HKDF_SHA256_AES_128,
                    HpkePublicKey(vec![0x42; 32]),
                );
                builder.with_ech(EchMode::Grease(grease)).unwrap()
            }
            _ => builder.with_safe_default_protocol_versions().unwrap(),
        };
        let mut config = builder.with_root_certificates(RootCertStore::empty()).with_no_client_auth();
        config.max_fragment_size = fragment;
        let server = ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = ClientConnection::new(Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    /// The server name rustls's own server side reads from `data`.
    fn rustls_server_name(data: &[u8]) -> Option<String> {
        let mut acceptor = Acceptor::default();
        let mut rd = data;
        loop {
            acceptor.read_tls(&mut rd).unwrap();
            match acceptor.accept() {
                Ok(Some(accepted)) => return accepted.client_hello().server_name().map(String::from),
                Ok(None) => assert!(!rd.is_empty(), "rustls wants more than the whole ClientHello"),
                Err((e, _)) => panic!("rustls rejects the ClientHello: {e}"),
            }
        }
    }

    const NAMES: [&str; 4] = [
        "example.com",
        "www.Example.COM",
        "a",
        // 253 characters: the longest DNS name.
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc.ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
    ];

    /// The handshake messages carried by a stream of handshake records.
    fn handshake_bytes(data: &[u8]) -> Vec<u8> {
        let mut hs = Vec::new();
        let mut at = 0;
        while at + 5 <= data.len() {
            assert_eq!(data[at], CONTENT_HANDSHAKE);
            let len = u16::from_be_bytes([data[at + 3], data[at + 4]]) as usize;
            hs.extend_from_slice(&data[at + 5..at + 5 + len]);
            at += 5 + len;
        }
        assert_eq!(at, data.len());
        hs
    }

    /// `hs` in handshake records of the given sizes (the last one takes the rest).
    fn records(hs: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        for (i, &size) in sizes.iter().enumerate() {
            let end = if i + 1 == sizes.len() { hs.len() } else { (at + size).min(hs.len()) };
            out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&((end - at) as u16).to_be_bytes());
            out.extend_from_slice(&hs[at..end]);
            at = end;
            if at == hs.len() {
                break;
            }
        }
        out
    }

    /// Random record sizes for `len` bytes: `n` records, some of one byte.
    fn random_sizes(rng: &mut StdRng, len: usize, n: usize) -> Vec<usize> {
        let mut cuts: Vec<usize> = (0..n - 1).map(|_| rng.random_range(1..len)).collect();
        // A run of one-byte records somewhere, and one at the very start.
        let run = rng.random_range(1..len - 8);
        cuts.extend([1, run, run + 1, run + 2, run + 3]);
        cuts.sort_unstable();
        cuts.dedup();
        let mut sizes = Vec::new();
        let mut from = 0;
        for c in cuts {
            sizes.push(c - from);
            from = c;
        }
        sizes.push(len - from);
        sizes
    }

    #[test]
    fn rustls_hellos_whole() {
        for kind in KINDS {
            for name in NAMES {
                let hello = rustls_hello(name, kind, None);
                // rustls's post-quantum ClientHello is about 1.46 KB (Chromium's,
                // with GREASE and more extensions, about 1.8 KB): more than a
                // full-sized segment (MSS 1448 with timestamps) on a 1500-byte
                // MTU. With an ECH GREASE extension it is about 1.87 KB.
                match kind {
                    Kind::Small => assert!(hello.len() < 600, "{}", hello.len()),
                    Kind::PostQuantum => assert!(hello.len() > 1448, "{}", hello.len()),
                    Kind::Ech => assert!(hello.len() > 1800, "{}", hello.len()),
                }
                let want = sni(name.as_bytes(), matches!(kind, Kind::Ech));
                assert_eq!(whole(&hello), want, "{kind:?} {name}");
                // rustls's server side folds the name to lower case.
                let reference = rustls_server_name(&hello).unwrap();
                assert!(reference.as_bytes().eq_ignore_ascii_case(&whole(&hello).name.unwrap()), "{reference}");
                let mut st = TlsState::new();
                assert_eq!(feed(&mut st, &hello), Step::Sni);
                assert_eq!(st.name(), name.as_bytes());
            }
        }
    }

    #[test]
    fn rustls_hellos_cut_anywhere() {
        let mut rng = StdRng::seed_from_u64(1);
        for kind in KINDS {
            for name in ["www.example.com", NAMES[3]] {
                let hello = rustls_hello(name, kind, None);
                let want = whole(&hello);
                assert_eq!(want, sni(name.as_bytes(), matches!(kind, Kind::Ech)));
                assert_cuts_agree(&hello, &want, &mut rng, 2000, 300);
            }
        }
    }

    #[test]
    fn small_hello_every_three_way_cut() {
        let hello = rustls_hello("three.example", Kind::Small, None);
        let want = sni(b"three.example", false);
        for a in 0..=hello.len() {
            for b in a..=hello.len() {
                assert_eq!(cut(&hello, &[a, b]), want, "cuts at {a}, {b}");
            }
        }
    }

    #[test]
    fn rustls_fragmented_records() {
        // rustls itself cutting the ClientHello into records of 128 bytes.
        for kind in KINDS {
            let hello = rustls_hello("frag.example.net", kind, Some(128));
            assert!(handshake_bytes(&hello).len() > 128);
            assert_eq!(whole(&hello), sni(b"frag.example.net", matches!(kind, Kind::Ech)), "{kind:?}");
            assert_eq!(rustls_server_name(&hello).as_deref(), Some("frag.example.net"));
        }
    }

    #[test]
    fn refragmented_records_cut_anywhere() {
        let mut rng = StdRng::seed_from_u64(2);
        for kind in KINDS {
            let hello = rustls_hello("refrag.example.org", kind, None);
            let hs = handshake_bytes(&hello);
            let want = sni(b"refrag.example.org", matches!(kind, Kind::Ech));
            for round in 0..12 {
                let n = [2, 3, 10, 40, 63][round % 5];
                let sizes = random_sizes(&mut rng, hs.len(), n);
                let data = records(&hs, &sizes);
                assert_eq!(handshake_bytes(&data), hs);
                assert_eq!(rustls_server_name(&data).as_deref(), Some("refrag.example.org"), "{sizes:?}");
                assert_eq!(whole(&data), want, "{kind:?} {sizes:?}");
                assert_cuts_agree(&data, &want, &mut rng, 200, 50);
            }
        }
    }

    #[test]
    fn one_byte_records_around_the_name() {
        // Every byte from the handshake header to the end of the name in its
        // own record, then the rest in one.
        let hello = rustls_hello("tiny.example", Kind::Small, None);
        let hs = handshake_bytes(&hello);
        let name_at = hs.windows(12).position(|w| w == b"tiny.example").unwrap();
        let mut sizes = vec![1; name_at + 12];
        sizes.push(hs.len());
        let data = records(&hs, &sizes);
        assert_eq!(whole(&data), sni(b"tiny.example", false));
        let mut sizes = vec![name_at - 40];
        sizes.extend([1; 60]);
        sizes.push(hs.len());
        let data = records(&hs, &sizes);
        assert_eq!(whole(&data), sni(b"tiny.example", false));
        assert_cuts_agree(&data, &sni(b"tiny.example", false), &mut StdRng::seed_from_u64(3), 100, 100);
    }

    /// Servers take a ClientHello in any number of records (OpenSSL, Go and
    /// rustls bound none), so the parser does too: every byte in its own
    /// record, hundreds of them, is read to its name; rustls's own server
    /// agrees.
    #[test]
    fn any_number_of_records() {
        for kind in KINDS {
            let hello = rustls_hello("many.example", kind, None);
            let hs = handshake_bytes(&hello);
            let data = records(&hs, &vec![1; hs.len()]);
            assert!(hs.len() > 200, "{}", hs.len());
            assert_eq!(rustls_server_name(&data).as_deref(), Some("many.example"));
            assert_eq!(whole(&data), sni(b"many.example", matches!(kind, Kind::Ech)), "{kind:?}");
            // rustls's smallest fragments (27 bytes of handshake per record).
            let small = rustls_hello("many.example", kind, Some(32));
            assert!(handshake_bytes(&small).len() / 27 >= 8);
            assert_eq!(whole(&small), sni(b"many.example", matches!(kind, Kind::Ech)), "{kind:?}");
        }
        let hello = rustls_hello("cuts.example", Kind::Small, None);
        let hs = handshake_bytes(&hello);
        let data = records(&hs, &vec![1; hs.len()]);
        assert_cuts_agree(&data, &sni(b"cuts.example", false), &mut StdRng::seed_from_u64(9), 50, 50);
    }

    /// `step` calls for one whole ClientHello, counted to size the kernel's loop.
    #[test]
    fn step_counts() {
        let count = |kind: Kind| {
            let hello = rustls_hello("www.example.com", kind, None);
            let (out, calls) = run(&[&hello]);
            assert_eq!(out.steps, [Step::Sni, Step::End]);
            // The steps to the name (the call returning End is the last).
            let (to_sni, _) = {
                let mut st = TlsState::new();
                let mut buf = Box::new([0u8; TLS_BUF]);
                buf[..hello.len()].copy_from_slice(&hello);
                let mut pos = 0;
                let mut n = 0;
                while step(&mut st, &buf, hello.len(), &mut pos) != Step::Sni {
                    n += 1;
                }
                (n + 1, pos)
            };
            (to_sni, calls)
        };
        let small = count(Kind::Small);
        let pq = count(Kind::PostQuantum);
        let ech = count(Kind::Ech);
        // One call for the record header, five for the fields before the
        // extensions, one per extension (its header, and the skip of its data
        // with the next one's header), three more for the name, one for End.
        // Measured (to Sni, to End): small (13, 20), post-quantum (14, 20),
        // with ECH GREASE (15, 20).
        std::eprintln!("step calls (to Sni, to End): small {small:?}, post-quantum {pq:?}, ech {ech:?}");
        for (to_sni, to_end) in [small, pq, ech] {
            assert!(to_sni <= to_end && to_end <= 24, "{to_sni} {to_end}");
        }
        // A Chromium-like ClientHello: 18 extensions, SNI last. Measured: 28.
        let mut exts: Vec<(u16, Vec<u8>)> = (1..18).map(|t| (t * 7, vec![0; 20 + usize::from(t)])).collect();
        exts.push((0, sni_ext(b"www.example.com")));
        let data = single_record(&client_hello(Some(&exts)));
        let (out, calls) = run(&[&data]);
        assert_eq!(out, sni(b"www.example.com", false));
        std::eprintln!("step calls, 18 extensions: {calls}");
        assert!(calls <= 6 + 18 + 3 + 1);
    }

    /// Stream offsets where `data`'s records begin (it is whole records).
    fn record_starts(data: &[u8]) -> Vec<usize> {
        let mut starts = Vec::new();
        let mut at = 0;
        while at + 5 <= data.len() {
            starts.push(at);
            at += 5 + usize::from(u16::from_be_bytes([data[at + 3], data[at + 4]]));
        }
        starts
    }

    /// Per segment: its bytes, the records begun in it, and the `step` calls
    /// it took (the call returning `NeedMore` or the final outcome included).
    fn steps_per_segment(data: &[u8], cuts: &[usize]) -> Vec<(usize, usize, usize)> {
        let starts = record_starts(data);
        let mut st = TlsState::new();
        let mut buf = Box::new([0u8; TLS_BUF]);
        let mut out = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([data.len()].iter()) {
            let seg = &data[from..to];
            let records = starts.iter().filter(|&&s| s >= from && s < to).count();
            from = to;
            buf[..seg.len()].copy_from_slice(seg);
            let (mut pos, mut calls) = (0, 0);
            loop {
                calls += 1;
                match step(&mut st, &buf, seg.len(), &mut pos) {
                    Step::Continue | Step::Sni => {}
                    _ => break,
                }
            }
            out.push((seg.len(), records, calls));
        }
        out
    }

    /// The most steps a segment of `bytes` bytes that begins `records`
    /// records can take: every step consumes at least four bytes except one
    /// cut short by its record's end (one per record) or by the segment's
    /// end, record headers read byte by byte at both ends of the segment
    /// (eight), the few short fields of each ClientHello that follow no
    /// opaque field (the server_name_list length, the name's type and
    /// length, a short name) and the last call.
    fn step_bound(bytes: usize, records: usize) -> usize {
        bytes / 4 + records + 14
    }

    #[test]
    fn worst_case_steps_per_segment() {
        let mut rng = StdRng::seed_from_u64(8);
        // ClientHellos made to cost the most steps per byte: empty
        // extensions (four bytes a step) or one-byte ones, filling a
        // 16 KB record, the name last; the same in 63 records, most of
        // them one byte long; every byte in its own record (two steps for
        // six bytes, the worst); empty records between one-byte ones.
        for data_len in [0, 1] {
            let mut exts: Vec<(u16, Vec<u8>)> = (0..3200).map(|t| (t + 1, vec![7; data_len])).collect();
            exts.push((0, sni_ext(b"w")));
            let hs = client_hello(Some(&exts));
            let mut tiny = vec![1; 62];
            tiny.insert(0, 3000);
            // Fewer extensions where every byte is a record (six times the bytes).
            let mut short: Vec<(u16, Vec<u8>)> = (0..600).map(|t| (t + 1, vec![7; data_len])).collect();
            short.push((0, sni_ext(b"w")));
            let short = client_hello(Some(&short));
            let ones = vec![1; short.len()];
            let empties: Vec<usize> = (0..2 * short.len()).map(|i| i % 2).collect();
            let layouts = [
                ("one record", single_record(&hs)),
                ("63 records", records(&hs, &tiny)),
                ("1-byte records", records(&short, &ones)),
                ("empty and 1-byte records", records(&short, &empties)),
            ];
            for (what, data) in layouts {
                assert_eq!(whole(&data), sni(b"w", false), "{what}");
                let mut worst = 0;
                for seg in [1460, 1448, 1000, 4096, 7] {
                    let cuts: Vec<usize> = (seg..data.len()).step_by(seg).collect();
                    for (bytes, records, calls) in steps_per_segment(&data, &cuts) {
                        assert!(calls <= step_bound(bytes, records), "{what}: {bytes} {records} {calls}");
                        if bytes == 1448 || bytes == 1460 {
                            worst = worst.max(calls);
                        }
                    }
                }
                for _ in 0..20 {
                    let cuts = random_cuts(&mut rng, data.len(), 2000);
                    for (bytes, records, calls) in steps_per_segment(&data, &cuts) {
                        assert!(calls <= step_bound(bytes, records), "{what}: {bytes} {records} {calls}");
                    }
                }
                // Measured, for a full-sized segment (1448 or 1460 bytes),
                // with a record's header and data in one step: one record:
                // 366 calls of empty extensions, 292 of one-byte ones; 63
                // records: 366 and 292; 1-byte records: 250 and 250; empty
                // and 1-byte records: 272 and 272 (before, 488 and 400 for
                // the last two).
                std::eprintln!("{what}, {data_len}-byte extensions: worst full-sized segment {worst} step calls");
                // Far past the kernel's bound: such a segment is not judged.
                assert!(worst > 3 * SEGMENT_STEPS as usize, "{what}: {worst}");
            }
        }
    }

    /// The most step calls any segment of a stream cut at `cuts` takes.
    fn most_steps(data: &[u8], cuts: &[usize]) -> usize {
        steps_per_segment(data, cuts).iter().map(|&(_, _, calls)| calls).max().unwrap_or(0)
    }

    /// [`SEGMENT_STEPS`] leaves real ClientHellos room to spare, in one
    /// segment or cut at MSS 1448, with a 255-byte name or 18 extensions;
    /// it cuts a segment of tiny records or of empty extensions; and a
    /// ClientHello in hundreds of tiny records, spread over segments that
    /// each stay under it, is read whole.
    #[test]
    fn segment_bound() {
        let bound = SEGMENT_STEPS as usize;
        let long = [b"a".repeat(63), b"b".repeat(63), b"c".repeat(63), b"example.com".to_vec()].join(&b'.');
        assert_eq!(long.len(), 3 * 64 + 11);
        let long = std::str::from_utf8(&long).expect("ascii").to_owned();
        for kind in KINDS {
            for name in ["www.example.com", long.as_str()] {
                let hello = rustls_hello(name, kind, None);
                for cuts in [vec![], vec![1448.min(hello.len() - 1)], vec![hello.len() / 2]] {
                    let most = most_steps(&hello, &cuts);
                    assert!(most + 12 <= bound, "{kind:?} {} cut at {cuts:?}: {most} steps", name.len());
                }
            }
        }
        let mut exts: Vec<(u16, Vec<u8>)> = (1..18).map(|t| (t * 7, vec![0; 20 + usize::from(t)])).collect();
        exts.push((0, sni_ext(long.as_bytes())));
        let chromium = single_record(&client_hello(Some(&exts)));
        let most = most_steps(&chromium, &[]);
        assert!(most + 12 <= bound, "18 extensions, 255-byte name: {most} steps");
        // A record each: one step per record (header and data together).
        let hs = handshake_bytes(&rustls_hello("www.example.com", Kind::Small, None));
        let (_, one) = run(&[&single_record(&hs)]);
        let (_, tens) = run(&[&records(&hs, &[10; 30])]);
        assert!(tens <= one + 30 + 2, "{one} steps in one record, {tens} in 30 records and one more");
        // Beyond the bound in one segment: records of two bytes, and
        // empty extensions.
        let tiny = records(&hs, &vec![2; hs.len().div_ceil(2)]);
        assert!(tiny.len() <= 1448);
        assert!(most_steps(&tiny, &[]) > bound);
        let empties: Vec<(u16, Vec<u8>)> =
            (1..=60).map(|t| (t, Vec::new())).chain([(0, sni_ext(b"www.example.com"))]).collect();
        assert!(most_steps(&single_record(&client_hello(Some(&empties))), &[]) > bound);
        // The same two-byte records spread over segments of 30 records each:
        // every segment within the bound, and the name read across them.
        let cuts: Vec<usize> = (30 * 7..tiny.len()).step_by(30 * 7).collect();
        assert!(most_steps(&tiny, &cuts) <= bound, "{}", most_steps(&tiny, &cuts));
        let pieces: Vec<&[u8]> =
            [0].iter().chain(&cuts).zip(cuts.iter().chain([tiny.len()].iter())).map(|(&a, &b)| &tiny[a..b]).collect();
        assert_eq!(run(&pieces).0, sni(b"www.example.com", false));
    }

    // --- hand-made ClientHellos -------------------------------------------

    fn sni_ext(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![0];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name);
        vector16(&entry)
    }

    fn vector16(data: &[u8]) -> Vec<u8> {
        let mut v = (data.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }

    /// A ClientHello handshake message with these extensions (or no
    /// extensions block at all).
    fn client_hello(exts: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0x11; 32]);
        body.push(32);
        body.extend_from_slice(&[0x22; 32]);
        body.extend_from_slice(&vector16(&[0x13, 0x01, 0x13, 0x02]));
        body.extend_from_slice(&[1, 0]);
        if let Some(exts) = exts {
            let mut block = Vec::new();
            for (t, data) in exts {
                block.extend_from_slice(&t.to_be_bytes());
                block.extend_from_slice(&vector16(data));
            }
            body.extend_from_slice(&vector16(&block));
        }
        let mut msg = vec![1];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    fn single_record(hs: &[u8]) -> Vec<u8> {
        records(hs, &[hs.len()])
    }

    fn with_sni(name: &[u8]) -> Vec<u8> {
        single_record(&client_hello(Some(&[(10, vec![0, 2, 0, 29]), (0, sni_ext(name)), (43, vec![2, 3, 4])])))
    }

    /// Checks `data` whole and cut at every offset.
    fn check(data: &[u8], want: &Outcome) {
        assert_eq!(&whole(data), want);
        assert_cuts_agree(data, want, &mut StdRng::seed_from_u64(4), 50, 20);
    }

    #[test]
    fn names_are_kept_as_sent() {
        for name in
            [&b"www.Example.COM"[..], b"x", b"caf\xc3\xa9.example", b"\x00\xff\x80 .\\", b"trailing.dot.", &[b'N'; 255]]
        {
            check(&with_sni(name), &sni(name, false));
        }
        check(&with_sni(&[b'n'; 256]), &failed(&[Step::Malformed(TlsError::SniTooLong)]));
        check(&with_sni(&[b'n'; 3000]), &failed(&[Step::Malformed(TlsError::SniTooLong)]));
    }

    #[test]
    fn hellos_without_a_name() {
        let end = Outcome { steps: vec![Step::End], name: None, ech: false, need_more: false };
        // TLS 1.2 without extensions, an empty block, extensions but no server_name.
        check(&single_record(&client_hello(None)), &end);
        check(&single_record(&client_hello(Some(&[]))), &end);
        check(&single_record(&client_hello(Some(&[(10, vec![0, 2, 0, 29]), (13, vec![])]))), &end);
        let ech = single_record(&client_hello(Some(&[(0xfe0d, vec![0; 200]), (13, vec![])])));
        check(&ech, &Outcome { ech: true, ..end.clone() });
        let mut st = TlsState::new();
        assert_eq!(feed(&mut st, &ech), Step::End);
        assert!(st.ech() && !st.has_sni() && st.name().is_empty());
    }

    #[test]
    fn ech_before_and_after_the_name() {
        let ech = (0xfe0d, vec![0, 0, 1, 0, 1, 1, 0, 0, 0, 0]);
        let before = single_record(&client_hello(Some(&[ech.clone(), (0, sni_ext(b"e.example"))])));
        check(&before, &sni(b"e.example", true));
        let after = single_record(&client_hello(Some(&[(0, sni_ext(b"e.example")), ech])));
        check(&after, &sni(b"e.example", true));
        // After Sni, the flag is not known yet; it is at End.
        let mut st = TlsState::new();
        let mut buf = Box::new([0u8; TLS_BUF]);
        buf[..after.len()].copy_from_slice(&after);
        let mut pos = 0;
        while step(&mut st, &buf, after.len(), &mut pos) != Step::Sni {}
        assert!(!st.ech());
        while step(&mut st, &buf, after.len(), &mut pos) != Step::End {}
        assert!(st.ech());
    }

    #[test]
    fn bad_server_name_extensions() {
        let ext = |data: Vec<u8>| single_record(&client_hello(Some(&[(0, data), (13, vec![])])));
        let bad = |e| failed(&[Step::Malformed(e)]);
        let end = Outcome { steps: vec![Step::End], name: None, ech: false, need_more: false };
        check(&ext(vec![0, 3, 0, 0, 0]), &bad(TlsError::SniEmpty));
        check(&ext(vec![0, 0]), &bad(TlsError::SniEmpty));
        check(&ext(vec![]), &bad(TlsError::LengthMismatch));
        check(&ext(vec![0]), &bad(TlsError::LengthMismatch));
        // A list too short for an entry: no server reads a name in it.
        check(&ext(vec![0, 1, 0]), &end);
        check(&ext(vec![0, 2, 0, 0]), &end);
        // Two names in the list, in a row or apart.
        check(&ext(vec![0, 8, 0, 0, 1, b'a', 0, 0, 1, b'b']), &bad(TlsError::SniTwoHostNames));
        check(&ext(vec![0, 12, 0, 0, 1, b'a', 7, 0, 1, b'x', 0, 0, 1, b'b']), &bad(TlsError::SniTwoHostNames));
        // A list shorter or longer than its extension.
        check(&ext(vec![0, 3, 0, 0, 1, b'a']), &bad(TlsError::LengthMismatch));
        check(&ext(vec![0, 5, 0, 0, 1, b'a']), &bad(TlsError::LengthMismatch));
        // A name longer than its list; a name shorter than its list, the
        // rest too short for an entry.
        check(&ext(vec![0, 4, 0, 0, 2, b'a']), &bad(TlsError::LengthMismatch));
        check(&ext(vec![0, 5, 0, 0, 1, b'a', b'b']), &sni(b"a", false));
        // A second server_name extension: the first name was reported.
        let twice = single_record(&client_hello(Some(&[(0, sni_ext(b"one")), (0, sni_ext(b"two"))])));
        let want = Outcome {
            steps: vec![Step::Sni, Step::Malformed(TlsError::SniDuplicate)],
            name: Some(b"one".to_vec()),
            ech: false,
            need_more: false,
        };
        check(&twice, &want);
    }

    /// A server_name_list of these (name_type, data) entries.
    fn name_list(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (t, data) in entries {
            list.push(*t);
            list.extend_from_slice(&vector16(data));
        }
        vector16(&list)
    }

    /// The host_name entry is judged wherever it is in the list: Go skips
    /// entries of other types before and after it, rustls ignores what
    /// follows an entry of another type after it (even when that entry's
    /// length overruns the list); OpenSSL and BoringSSL refuse both, which
    /// costs nothing to judge.
    #[test]
    fn server_name_list_entries() {
        let hello = |list: Vec<u8>| {
            single_record(&client_hello(Some(&[(10, vec![0, 2, 0, 29]), (0, list), (43, vec![2, 3, 4])])))
        };
        let named = |name: &[u8]| sni(name, false);
        let end = Outcome { steps: vec![Step::End], name: None, ech: false, need_more: false };
        for (entries, want) in [
            (&[(1u8, &b"opaque"[..]), (0, b"blocked.example")][..], named(b"blocked.example")),
            (&[(0, b"allowed.example"), (2, b"x")], named(b"allowed.example")),
            (&[(7, b"a"), (0xff, b""), (0, b"mid.example"), (9, b"zz")], named(b"mid.example")),
            (&[(1, b"no host name")], end.clone()),
            (&[(1, b"a"), (0, b"")], failed(&[Step::Malformed(TlsError::SniEmpty)])),
            (&[(1, b"a"), (0, &[b'n'; 256])], failed(&[Step::Malformed(TlsError::SniTooLong)])),
            (
                &[(0, b"one.example"), (1, b"a"), (0, b"two.example")],
                failed(&[Step::Malformed(TlsError::SniTwoHostNames)]),
            ),
        ] {
            let data = hello(name_list(entries));
            check(&data, &want);
        }
        // rustls stops at an entry of another type whose length overruns the
        // list: the host_name before it stands, bytes after it are not read.
        let mut list = vec![0, 0, 9];
        list.extend_from_slice(b"r.example");
        list.extend_from_slice(&[5, 0xff, 0xff, 0, 0, 1, b'z']);
        let mut v = vector16(&list);
        check(&hello(v.clone()), &named(b"r.example"));
        // An overrunning entry first: no name any server reads.
        v = vector16(&[5, 0, 9, 0, 0, 1, b'z']);
        check(&hello(v), &end);
        // rustls's own server takes the host_name before an entry of another type.
        let theirs = rustls_hello("www.example.com", Kind::Small, None);
        let hs = handshake_bytes(&theirs);
        let at = hs.windows(15).position(|w| w == b"www.example.com").unwrap();
        // Before the name: the extension's length (at - 7), the list's
        // (at - 5), the name's type and length.
        let mut edited = hs[..at - 5].to_vec();
        let tail = [0x01, 0x00, 0x01, b'x'];
        edited.extend_from_slice(&((15 + 3 + tail.len()) as u16).to_be_bytes());
        edited.extend_from_slice(&hs[at - 3..at + 15]);
        edited.extend_from_slice(&tail);
        edited.extend_from_slice(&hs[at + 15..]);
        let grow = |bytes: &mut Vec<u8>, at: usize, width: usize| {
            let mut v = 0usize;
            for b in &bytes[at..at + width] {
                v = v << 8 | usize::from(*b);
            }
            v += tail.len();
            bytes[at..at + width].copy_from_slice(&v.to_be_bytes()[8 - width..]);
        };
        // The extension, the extensions block and the message grow with the list.
        grow(&mut edited, at - 7, 2);
        let block_at = {
            let sid = usize::from(edited[4 + 34]);
            let suites = usize::from(u16::from_be_bytes([edited[4 + 35 + sid], edited[4 + 36 + sid]]));
            let methods = usize::from(edited[4 + 37 + sid + suites]);
            4 + 38 + sid + suites + methods
        };
        grow(&mut edited, block_at, 2);
        grow(&mut edited, 1, 3);
        let data = records(&edited, &[edited.len()]);
        assert_eq!(rustls_server_name(&data).as_deref(), Some("www.example.com"));
        check(&data, &named(b"www.example.com"));
    }

    #[test]
    fn bad_records() {
        let hs = client_hello(Some(&[(0, sni_ext(b"r.example"))]));
        let good = sni(b"r.example", false);
        let mut two = records(&hs, &[30, hs.len()]);
        check(&two, &good);
        // Any record version, first or later (RFC 8446 §5.1; Go takes any
        // below 0x1000 on a first ClientHello, the others any 0x03XX).
        for version in [[3, 0], [3, 1], [3, 4], [3, 5], [3, 0xff], [0, 0], [0, 1], [2, 0], [0x0f, 0xff], [0xff, 0xff]] {
            for at in [1, 36] {
                let kept = [two[at], two[at + 1]];
                two[at..at + 2].copy_from_slice(&version);
                check(&two, &good);
                two[at..at + 2].copy_from_slice(&kept);
            }
        }
        // Not a handshake record in the middle.
        for t in [20, 21, 23, 24, 0, 0xff] {
            two[35] = t;
            check(&two, &failed(&[Step::Malformed(TlsError::RecordType)]));
        }
        two[35] = CONTENT_HANDSHAKE;
        // Empty records, first or later, one or many (OpenSSL skips them).
        check(&records(&hs, &[0, hs.len()]), &good);
        check(&records(&hs, &[10, 0, 0, 0, hs.len()]), &good);
        let many: Vec<usize> = (0..2 * hs.len()).map(|i| i % 2).collect();
        check(&records(&hs, &many), &good);
        // Any record length: one longer than the ClientHello is fine, it ends inside.
        for len in [16384u16, 16640, 16641, 18431, 0xffff] {
            let mut r = two.clone();
            r[35 + 3..35 + 5].copy_from_slice(&len.to_be_bytes());
            check(&r, &good);
        }
        // Whatever follows the ClientHello is not looked at.
        let mut tail = single_record(&hs);
        tail.extend_from_slice(&[23, 3, 3, 0, 0, 0xde, 0xad]);
        check(&tail, &good);
        // The ClientHello's header split across records, byte by byte.
        check(&records(&hs, &[1, 1, 1, 1, hs.len()]), &good);
    }

    #[test]
    fn not_client_hellos() {
        let not = failed(&[Step::NotClientHello]);
        let mut rng = StdRng::seed_from_u64(5);
        let mut random = vec![0u8; 300];
        for _ in 0..200 {
            rng.fill(&mut random[..]);
            if random[0] == CONTENT_HANDSHAKE {
                continue;
            }
            check(&random, &not);
        }
        for data in [
            &b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"[..],
            b"SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n",
            // Application data, an alert, a ServerHello, SSLv2, a ServerHello
            // under another record version.
            &[23, 3, 3, 0, 5, 1, 2, 3, 4, 5],
            &[21, 3, 3, 0, 2, 2, 40],
            &[22, 3, 3, 0, 4, 2, 0, 0, 0],
            &[0x80, 0x2e, 1, 3, 1],
            &[22, 2, 0, 0, 4, 2, 0, 0, 0],
        ] {
            check(data, &not);
        }
        // Told at the first byte that proves it.
        let mut st = TlsState::new();
        assert_eq!(feed(&mut st, b"G"), Step::NotClientHello);
        let mut st = TlsState::new();
        assert_eq!(feed(&mut st, &[22]), Step::NeedMore);
        // Any record version.
        assert_eq!(feed(&mut st, &[2, 0, 0]), Step::NeedMore);
        assert_eq!(feed(&mut st, &[9, 2]), Step::NotClientHello);
        let mut st = TlsState::new();
        assert_eq!(feed(&mut st, &[22, 3, 1, 0, 9]), Step::NeedMore);
        assert_eq!(feed(&mut st, &[2]), Step::NotClientHello);
    }

    #[test]
    fn every_truncation_wants_more() {
        for kind in KINDS {
            let hello = rustls_hello("trunc.example", kind, None);
            let full = whole(&hello);
            for n in 0..hello.len() {
                let out = whole(&hello[..n]);
                assert_eq!(out, reference(&hello[..n]), "{n}");
                assert!(out.need_more, "{n}: {out:?}");
                assert!(full.steps.starts_with(&out.steps), "{n}: {out:?}");
                if !out.steps.is_empty() {
                    assert_eq!(out.name.as_deref(), Some(&b"trunc.example"[..]));
                }
            }
        }
    }

    /// How the reference reading stops.
    #[derive(Clone, Copy, Debug)]
    enum Stop {
        End,
        NotClientHello,
        Malformed(TlsError),
        /// Out of bytes.
        More,
    }

    /// The handshake bytes read so far and where the reference's
    /// ClientHello must stop when it needs more than them.
    struct Cursor<'a> {
        hs: &'a [u8],
        pos: usize,
        /// Why there are no more handshake bytes: the stream ended, or a
        /// record header was rejected.
        out: Stop,
    }

    impl Cursor<'_> {
        /// `n` bytes of a field inside a container ending at `end`: the
        /// container is checked first, as the parser claims a field's size
        /// when the field begins.
        fn take(&mut self, n: usize, end: usize) -> Result<&[u8], Stop> {
            if self.pos + n > end {
                return Err(Stop::Malformed(TlsError::LengthMismatch));
            }
            let field = self.hs.get(self.pos..self.pos + n).ok_or(self.out)?;
            self.pos += n;
            Ok(field)
        }

        fn int(&mut self, n: usize, end: usize) -> Result<usize, Stop> {
            Ok(self.take(n, end)?.iter().fold(0, |v, &b| v << 8 | usize::from(b)))
        }
    }

    /// The same rules read a second way, for differential tests: records
    /// unwrapped first, then the ClientHello walked over plain slices with
    /// the end of every container as an offset. It shares no code with the
    /// parser.
    fn reference(data: &[u8]) -> Outcome {
        let mut hs = Vec::new();
        let mut at = 0;
        let mut records = 0;
        let out = loop {
            let h = &data[at..];
            let first = records == 0;
            let Some(&t) = h.first() else { break Stop::More };
            if t != CONTENT_HANDSHAKE {
                break if first { Stop::NotClientHello } else { Stop::Malformed(TlsError::RecordType) };
            }
            // Any version, any length, empty records too.
            let Some(len) = h.get(3..5) else { break Stop::More };
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            records += 1;
            let payload = &h[5..h.len().min(5 + len)];
            hs.extend_from_slice(payload);
            if payload.len() < len {
                break Stop::More;
            }
            at += 5 + len;
        };
        let mut r = Cursor { hs: &hs, pos: 0, out };
        let mut name = None;
        let mut ech = false;
        let stop = match walk(&mut r, &mut name, &mut ech) {
            Ok(()) => Stop::End,
            Err(stop) => stop,
        };
        let mut steps: Vec<Step> = name.iter().map(|_| Step::Sni).collect();
        match stop {
            Stop::End => steps.push(Step::End),
            Stop::NotClientHello => steps.push(Step::NotClientHello),
            Stop::Malformed(e) => steps.push(Step::Malformed(e)),
            Stop::More => {}
        }
        Outcome { steps, name, ech, need_more: matches!(stop, Stop::More) }
    }

    /// The reference's ClientHello walk.
    fn walk(r: &mut Cursor, name: &mut Option<Vec<u8>>, ech: &mut bool) -> Result<(), Stop> {
        let t = r.int(1, usize::MAX)?;
        if t != 1 {
            return Err(Stop::NotClientHello);
        }
        let body_len = r.int(3, usize::MAX)?;
        let end = r.pos + body_len;
        let bad = Err(Stop::Malformed(TlsError::LengthMismatch));
        r.take(34, end)?;
        let sid = r.int(1, end)?;
        if sid > 32 {
            return bad;
        }
        r.take(sid, end)?;
        let suites = r.int(2, end)?;
        if suites == 0 || suites % 2 == 1 {
            return bad;
        }
        r.take(suites, end)?;
        let methods = r.int(1, end)?;
        if methods == 0 {
            return bad;
        }
        r.take(methods, end)?;
        if r.pos == end {
            return Ok(());
        }
        let block = r.int(2, end)?;
        if r.pos + block != end {
            return bad;
        }
        let mut sni_seen = false;
        while r.pos < end {
            let h = r.int(4, end)?;
            let (t, len) = (h >> 16, h & 0xffff);
            if t == 0xfe0d {
                *ech = true;
            }
            let ext_end = r.pos + len;
            if ext_end > end {
                return bad;
            }
            if t != 0 {
                r.take(len, ext_end)?;
                continue;
            }
            if sni_seen {
                return Err(Stop::Malformed(TlsError::SniDuplicate));
            }
            sni_seen = true;
            let list = r.int(2, ext_end)?;
            if r.pos + list != ext_end {
                return bad;
            }
            if list == 0 {
                return Err(Stop::Malformed(TlsError::SniEmpty));
            }
            let mut host = None;
            // Entries: a host_name wherever it is, others skipped; fewer
            // than three bytes, or an entry overrunning the list, end it.
            while r.pos < ext_end {
                if ext_end - r.pos < 3 {
                    r.take(ext_end - r.pos, ext_end)?;
                    break;
                }
                let entry = r.int(3, ext_end)?;
                let (typ, n) = (entry >> 16, entry & 0xffff);
                if typ != 0 {
                    let n = n.min(ext_end - r.pos);
                    r.take(n, ext_end)?;
                    continue;
                }
                if host.is_some() {
                    return Err(Stop::Malformed(TlsError::SniTwoHostNames));
                }
                if r.pos + n > ext_end {
                    return bad;
                }
                if n == 0 {
                    return Err(Stop::Malformed(TlsError::SniEmpty));
                }
                if n >= MAX_SNI {
                    return Err(Stop::Malformed(TlsError::SniTooLong));
                }
                host = Some(r.take(n, ext_end)?.to_vec());
            }
            if host.is_some() {
                *name = host;
            }
        }
        Ok(())
    }

    #[test]
    fn the_reference_reads_rustls_hellos() {
        for kind in KINDS {
            let hello = rustls_hello("ref.example", kind, None);
            assert_eq!(reference(&hello), sni(b"ref.example", matches!(kind, Kind::Ech)));
        }
    }

    /// Offsets and widths of every length field of a single-record
    /// ClientHello, found by a plain slice walk, and whether changing it
    /// must make the ClientHello malformed whatever the other bytes are
    /// (the others shift the parse onto bytes that may, by chance, add up).
    fn length_fields(data: &[u8]) -> Vec<(usize, usize, bool)> {
        let u16_at = |i: usize| usize::from(u16::from_be_bytes([data[i], data[i + 1]]));
        let mut fields = vec![(3, 2, false), (6, 3, true)];
        let mut at = 9 + 34;
        fields.push((at, 1, false));
        at += 1 + usize::from(data[at]);
        fields.push((at, 2, false));
        at += 2 + u16_at(at);
        fields.push((at, 1, false));
        at += 1 + usize::from(data[at]);
        fields.push((at, 2, true));
        at += 2;
        while at < data.len() {
            let (t, len) = (u16_at(at), u16_at(at + 2));
            fields.push((at + 2, 2, t == 0));
            if t == 0 {
                // The list's length must fill the extension; a shorter
                // name leaves bytes no server reads a name in.
                fields.extend([(at + 4, 2, true), (at + 7, 2, false)]);
            }
            at += 4 + len;
        }
        assert_eq!(at, data.len());
        fields
    }

    #[test]
    fn length_fields_off_by_one() {
        let mut rng = StdRng::seed_from_u64(6);
        for kind in KINDS {
            let hello = rustls_hello("len.example", kind, None);
            let want = whole(&hello);
            for (at, width, strict) in length_fields(&hello) {
                for delta in [1i32, -1, 0x100, -0x100, 0x7fff] {
                    let mut data = hello.clone();
                    let mut old = 0u32;
                    for b in &data[at..at + width] {
                        old = old << 8 | u32::from(*b);
                    }
                    let v = old.wrapping_add_signed(delta) & ((1 << (8 * width)) - 1);
                    if v == old {
                        continue;
                    }
                    data[at..at + width].copy_from_slice(&v.to_be_bytes()[4 - width..]);
                    let out = whole(&data);
                    assert_eq!(out, reference(&data), "{at} {delta}");
                    assert_cuts_agree(&data, &out, &mut rng, 5, 5);
                    if let Some(name) = &out.name {
                        assert!(b"len.example".starts_with(name), "{at} {delta}: {out:?}");
                    }
                    if at == 3 && v as usize > hello.len() - 5 {
                        // A record longer than the ClientHello: nothing changes.
                        assert_eq!(out, want);
                    } else if strict {
                        assert!(matches!(out.steps.last(), Some(Step::Malformed(_))), "{at} {delta}: {out:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn random_bytes_and_mutations_never_disagree() {
        let mut rng = StdRng::seed_from_u64(7);
        let hellos: Vec<Vec<u8>> = KINDS.iter().map(|&k| rustls_hello("fuzz.example", k, None)).collect();
        for i in 0..4000 {
            let data = match i % 4 {
                // Random bytes behind a plausible record header.
                0 => {
                    let mut d = vec![0u8; rng.random_range(0..700)];
                    rng.fill(&mut d[..]);
                    if d.len() >= 6 {
                        d[..3].copy_from_slice(&[22, 3, 1]);
                        d[5] = 1;
                    }
                    d
                }
                // A real ClientHello with a few bytes changed.
                1 | 2 => {
                    let mut d = hellos[rng.random_range(0..hellos.len())].clone();
                    for _ in 0..rng.random_range(1..6) {
                        let at = rng.random_range(0..d.len());
                        d[at] = rng.random();
                    }
                    d
                }
                // Re-fragmented, then cut short or changed.
                _ => {
                    let hs = handshake_bytes(&hellos[rng.random_range(0..hellos.len())]);
                    let n = rng.random_range(2..70);
                    let sizes = random_sizes(&mut rng, hs.len(), n);
                    let mut d = records(&hs, &sizes);
                    if rng.random() {
                        d.truncate(rng.random_range(0..d.len()));
                    } else {
                        let at = rng.random_range(0..d.len());
                        d[at] ^= 1 << rng.random_range(0..8);
                    }
                    d
                }
            };
            let want = whole(&data);
            assert_eq!(want, reference(&data), "{i}: {data:02x?}");
            if let Some(name) = &want.name {
                assert!(!name.is_empty() && name.len() < MAX_SNI);
            }
            for _ in 0..3 {
                let max = rng.random_range(1..300);
                let c = random_cuts(&mut rng, data.len(), max);
                assert_eq!(cut(&data, &c), want, "{i}: cuts at {c:?}");
            }
        }
    }

    #[test]
    fn state_layout() {
        // All zero is the start of a stream (map values start zeroed).
        // SAFETY: TlsState is made of integers and byte arrays only.
        let zero: TlsState = unsafe { core::mem::zeroed() };
        assert_eq!(zero, TlsState::new());
        assert_eq!(TlsState::default(), TlsState::new());
        // A reset state parses like a new one, whatever its name held.
        let hello = with_sni(b"second.example");
        let mut st = TlsState::new();
        assert_eq!(feed(&mut st, &with_sni(&[b'x'; 200])), Step::Sni);
        st.reset();
        assert!(st.name().is_empty() && !st.has_sni());
        assert_eq!(feed(&mut st, &hello), Step::Sni);
        assert_eq!(st.name(), b"second.example");
        assert_eq!(core::mem::size_of::<TlsState>(), 280);
        assert_eq!(core::mem::align_of::<TlsState>(), 4);
    }

    #[test]
    fn codes_round_trip() {
        for (i, e) in TlsError::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i + 1);
            assert_eq!(TlsError::from_code(*e as u8), Some(*e));
            assert_eq!(Step::from_code(Step::Malformed(*e).code()), Step::Malformed(*e));
        }
        assert_eq!(TlsError::from_code(0), None);
        assert_eq!(TlsError::from_code(TlsError::ALL.len() as u8 + 1), None);
        for s in [Step::Continue, Step::NeedMore, Step::Sni, Step::End, Step::NotClientHello] {
            assert_eq!(Step::from_code(s.code()), s);
        }
        assert_eq!(Step::from_code(STEP_CONTINUE), Step::Continue);
        assert_eq!(Step::from_code(99), Step::Malformed(TlsError::TooLong));
        assert_eq!(Step::from_code(u64::MAX), Step::Malformed(TlsError::TooLong));
    }

    #[test]
    fn lengths_past_the_buffer_are_clamped() {
        let hello = with_sni(b"clamp.example");
        let mut buf = Box::new([0u8; TLS_BUF]);
        buf[..hello.len()].copy_from_slice(&hello);
        let mut st = TlsState::new();
        let mut pos = 0;
        // A caller's `len` beyond the buffer reads no further than its end.
        let mut outs = Vec::new();
        loop {
            match step(&mut st, &buf, usize::MAX, &mut pos) {
                Step::Continue => {}
                s => {
                    outs.push(s);
                    if s != Step::Sni {
                        break;
                    }
                }
            }
            assert!(pos <= TLS_BUF);
        }
        assert_eq!(outs, [Step::Sni, Step::End]);
        // A position past the end consumes nothing.
        let mut st = TlsState::new();
        let mut pos = 10;
        assert_eq!(step(&mut st, &buf, 5, &mut pos), Step::NeedMore);
        assert_eq!(pos, 10);
    }
}
