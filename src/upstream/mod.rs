//! The upstream side: a client that only ever speaks to the upstream MTA over verified TLS.
//! [`Connector`] connects and secures ([`client`]); the session's transaction states are in
//! [`session`]: `Ready` -> `InTransaction` -> `Ready`.

mod client;
mod conn;
mod error;
mod identity;
mod session;

pub use client::{Connector, Extensions};
pub use error::{Phase, UpstreamError};
pub use identity::{xtext, ClientIdentity, ForwardClient, IdentityError};
pub use session::{InTransaction, Mail, Ready, Tls};
