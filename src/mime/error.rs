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
}
