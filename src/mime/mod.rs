//! MIME handling shared by the S/MIME and OpenPGP sealing code.
//!
//! Everything here works on raw bytes and never panics on malformed input: a message that cannot
//! be processed within the configured [`Limits`] is reported as a [`MimeError`].
//!
//! # From an incoming message to the entity that gets signed or encrypted
//!
//! [`prepare`] does the whole job; the steps are public so other modules can reuse them:
//!
//! 1. [`parse_message`] splits the message into header fields and the body offset. Header fields
//!    keep their raw bytes (folding included, and white space before the colon, which Postfix
//!    and mail-parser accept); [`HeaderField::value`] unfolds them for reading. A line that is
//!    neither a field nor a continuation ends the header section (garbage is treated as body,
//!    never dropped). Header size and field count are bounded.
//! 2. [`split_headers`] separates the *outer* header fields (routing and everything that is not
//!    structural: From, To, Cc, Date, Message-ID, Subject, trace fields, ...) from the *inner*
//!    entity (the `Content-*` fields and the body). `MIME-Version` is dropped from both (the outer
//!    message gets its own). **`Bcc` is dropped everywhere** (SECURITY.md I7).
//! 3. Header protection (RFC 9788): the inner entity also carries copies of the protected fields
//!    ([`PROTECTED_FIELDS`]), its `Content-Type` gets the `hp="clear"` (signed only) or
//!    `hp="cipher"` (encrypted) parameter, and for encrypted messages one `HP-Outer` field per
//!    protected field left on the outside. With `hide_subject` the outer `Subject` becomes
//!    [`HIDDEN_SUBJECT`] (`[...]`, only when encrypting). [`PrepareOptions::for_sealing`] picks
//!    the mode S/MIME and OpenPGP use.
//! 4. [`canonicalize_for`] turns the inner entity into the canonical form that is signed. It
//!    changes only what must change for a signature to survive transport, reversibly (issue 17):
//!    - every line ends with CRLF (bare LF and bare CR become CRLF) in headers and in text;
//!    - a leaf part that is not 7-bit clean (a byte >= 0x80, NUL, or a line longer than 998
//!      octets) is re-encoded: `text/*` (or no Content-Type) to quoted-printable, anything else
//!      to base64 of the raw bytes; a quoted-printable or base64 part that still breaks those
//!      rules is decoded leniently and re-encoded; `8bit`/`binary` on clean parts becomes `7bit`;
//!    - multiparts are recursed into (up to [`Limits::max_depth`] levels, also through
//!      `message/rfc822`); the preamble, the delimiter lines (with any text after the boundary,
//!      RFC 2046's note) and the epilogue are kept as they are; a missing close delimiter is not
//!      invented; a multipart or message/rfc822 never gets a base64 or quoted-printable encoding;
//!    - a part with an unknown transfer encoding, a multipart whose delimiters are not found,
//!      an embedded message without a header, and a client's own signed or encrypted multipart
//!      are copied as they are;
//!    - header lines longer than 998 octets are folded at white space (the value unfolds to the
//!      same octets); raw UTF-8 in header fields (RFC 6532) is kept as is;
//!    - a final line without CRLF stays without it.
//!
//!    Bytes copied as they are that are not 7-bit safe depend on the [`Carrier`]: signed in
//!    clear, the message is refused ([`MimeError::NotSevenBit`], `554 5.6.0` with the reason);
//!    inside encryption they are kept exactly. Nothing is ever dropped. `canonicalize` (clear)
//!    and [`canonicalize_for`] are idempotent.
//! 5. [`assemble`] writes the outgoing message: outer fields, `MIME-Version`, the new
//!    `Content-Type` / `Content-Transfer-Encoding`, and the body.
//!
//! [`detect_protection`] recognises mail that is already signed or encrypted (S/MIME, PGP/MIME,
//! a text body that is exactly one inline PGP block), by the top-level structure only, so that
//! it is not sealed again by accident; [`new_boundary`] makes random
//! boundaries checked to be absent from the content.

mod address;
mod assemble;
mod boundary;
mod canon;
mod content_type;
mod encoded_word;
mod encoding;
mod error;
mod header;
mod prepare;
mod protection;

pub use address::mailboxes;
pub use assemble::assemble;
pub use boundary::new_boundary;
pub(crate) use canon::split_multipart;
pub use canon::{canonicalize, canonicalize_for, Carrier};
pub use content_type::ContentType;
pub use encoded_word::{decode_unstructured, encode_unstructured};
pub use encoding::{encode_base64_body, encode_base64_body_into, encode_quoted_printable};
pub use error::MimeError;
pub use header::{parse_message, refold_header_section, HeaderField, ParsedMessage};
pub use prepare::{
    prepare, split_headers, HeaderProtection, PrepareOptions, Prepared, HIDDEN_SUBJECT,
    PROTECTED_FIELDS,
};
pub use protection::{detect_protection, Protection};

/// Bounds applied while parsing and canonicalising (SECURITY.md I9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest header section, in bytes, of the message or of any part.
    pub max_header_bytes: usize,
    /// Most header fields in one header section.
    pub max_header_fields: usize,
    /// Deepest nesting of multiparts and embedded messages.
    pub max_depth: usize,
    /// Most body parts in the whole message.
    pub max_parts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 1024 * 1024,
            max_header_fields: 2000,
            max_depth: 32,
            max_parts: 10_000,
        }
    }
}

/// Longest line allowed by RFC 5322, without its CRLF.
pub const MAX_LINE: usize = 998;
