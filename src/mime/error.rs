use thiserror::Error;

/// Why a message could not be handled by the MIME layer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MimeError {
    /// The header section is larger than [`super::Limits::max_header_bytes`].
    #[error("header section larger than {limit} bytes")]
    HeaderTooLarge { limit: usize },
    /// More header fields than [`super::Limits::max_header_fields`].
    #[error("more than {limit} header fields")]
    TooManyHeaderFields { limit: usize },
    /// Multiparts or embedded messages nested deeper than [`super::Limits::max_depth`].
    #[error("MIME structure nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    /// More body parts than [`super::Limits::max_parts`].
    #[error("more than {limit} MIME parts")]
    TooManyParts { limit: usize },
    /// A header line longer than 998 octets without any space to fold it at.
    #[error("header field {name:?} has a line longer than 998 octets that cannot be folded")]
    UnfoldableHeaderLine { name: String },
    /// No random boundary absent from the content could be found (practically impossible).
    #[error("could not find a boundary absent from the content")]
    BoundaryCollision,
    /// Bytes that no reversible re-encoding can make 7-bit (an 8-bit preamble, a part with an
    /// unknown transfer encoding...) in content that is sent in clear (signed only): changing
    /// them would change the message, sending them could break the signature.
    #[error("{what} is not 7-bit and cannot be re-encoded without changing it")]
    NotSevenBit {
        /// What it is, in words fit for the client's reply.
        what: &'static str,
    },
}

impl MimeError {
    /// Why the message is refused, in words for the client's `554 5.6.0` reply (names no
    /// internal limit or configuration key).
    pub fn reply_text(&self) -> String {
        match self {
            MimeError::HeaderTooLarge { .. } => "Message header section is too large".into(),
            MimeError::TooManyHeaderFields { .. } => "Message has too many header fields".into(),
            MimeError::TooDeep { .. } => "MIME structure is nested too deeply".into(),
            MimeError::TooManyParts { .. } => "Message has too many MIME parts".into(),
            MimeError::UnfoldableHeaderLine { .. } => {
                "A header line is longer than 998 octets and has no white space to fold it at"
                    .into()
            }
            MimeError::BoundaryCollision => "MIME boundary could not be chosen".into(),
            MimeError::NotSevenBit { what } => format!(
                "Message cannot be signed without changing it: {what} is not 7-bit and cannot be re-encoded"
            ),
        }
    }
}
