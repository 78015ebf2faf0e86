//! OpenPGP sealing as PGP/MIME (RFC 3156 over RFC 4880 / RFC 9580).
//!
//! Pure functions over bytes: no SMTP, no key store, no I/O. The caller
//! (the relay, through the shared `mime` module) hands over
//!
//! - `outer_headers`: the header block that stays in clear (CRLF lines,
//!   optionally ending with the empty line), and
//! - `inner`: the MIME entity to protect, already canonical (CRLF line
//!   ends, 7-bit-safe transfer encodings) and already carrying the protected
//!   header fields (RFC 9788).
//!
//! and gets back the complete outgoing message:
//!
//! - [`encrypt`]: `multipart/encrypted; protocol="application/pgp-encrypted"`,
//!   signed inside the encryption when a [`SigningKey`] is given;
//! - [`sign`]: `multipart/signed; protocol="application/pgp-signature";
//!   micalg=pgp-sha256`, a detached signature over the inner entity exactly
//!   as emitted.
//!
//! The one transformation applied to `inner`: when it carries protected
//! header fields (anything besides Content-* and MIME-Version) and its
//! Content-Type has no `protected-headers` parameter,
//! `;\r\n protected-headers="v1"` is appended to that Content-Type field
//! (see [`mime_glue::mark_protected_headers`]). Otherwise the inner entity
//! is emitted (signed) or encrypted byte for byte.
//!
//! Every failure is a [`PgpError`] and means "do not send": there is no
//! plaintext fallback (SECURITY.md I6). Nothing is written to a caller's
//! writer before every key and input check has passed.

mod assemble;
mod encrypt;
mod error;
mod format;
mod keys;
pub mod mime_glue;
mod sign;

pub use assemble::HIDDEN_SUBJECT;
pub use encrypt::{encrypt, encrypt_to};
pub use error::{CryptoSource, PgpError};
pub use format::{choose as choose_format, MessageFormat};
pub use keys::{Capabilities, Recipient, SigningKey};
pub use sign::{sign, sign_to};

use mime_glue::Header;

/// Size of the writes into sequoia's writer stack (keeps its buffers, and
/// so memory, bounded whatever the message size).
const WRITE_CHUNK: usize = 256 * 1024;

/// Options for sealing one message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PgpOptions {
    /// Also encrypt to the sender's own certificate (the signing key's).
    pub encrypt_to_self: bool,
    /// Add an Autocrypt header with the sender's public key (off by default).
    pub autocrypt: bool,
    /// Replace the outer Subject of an encrypted message with "[...]".
    /// (No effect on signed-only mail, whose content is in clear anyway.)
    pub hide_subject: bool,
    /// Seal input that is already signed or encrypted (wrapping it; it is
    /// never opened). Without it such input is refused.
    pub force: bool,
}

/// The parsed, checked input common to both forms.
struct Input<'a> {
    outer: Header<'a>,
    /// The inner header block to emit (rewritten if marked), with its
    /// terminating empty line if it had one.
    inner_head: std::borrow::Cow<'a, [u8]>,
    /// The inner body, borrowed: large bodies are never copied.
    inner_body: &'a [u8],
}

impl Input<'_> {
    /// The inner entity as emitted, in two pieces.
    fn pieces(&self) -> [&[u8]; 2] {
        [&self.inner_head, self.inner_body]
    }
}

/// Parses and checks the input: CRLF everywhere, a well-formed header in
/// both blocks, no already-protected content unless `force`.
fn prepare<'a>(
    outer_headers: &'a [u8],
    inner: &'a [u8],
    opts: &PgpOptions,
) -> Result<Input<'a>, PgpError> {
    mime_glue::check_crlf(outer_headers)?;
    mime_glue::check_crlf(inner)?;
    let outer = mime_glue::parse_header(outer_headers)?;
    if outer.end != outer_headers.len() {
        return Err(PgpError::NotCanonical {
            what: "content after the empty line that ends the outer header block",
            offset: outer.end,
        });
    }
    let inner_header = mime_glue::parse_header(inner)?;
    let body = &inner[inner_header.end..];
    if !opts.force {
        if let Some(kind) = mime_glue::detect_protected(&outer, &inner_header, body) {
            return Err(PgpError::AlreadyProtected { kind });
        }
    }
    let inner_head = match mime_glue::mark_protected_headers(inner, &inner_header) {
        Some(marked) => std::borrow::Cow::Owned(marked),
        None => std::borrow::Cow::Borrowed(&inner[..inner_header.end]),
    };
    Ok(Input {
        outer,
        inner_head,
        inner_body: body,
    })
}
