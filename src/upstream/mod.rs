//! The upstream side: a client that only ever speaks to the upstream MTA over verified TLS.

mod client;
mod conn;
mod error;
mod identity;

pub use client::{Connector, Extensions, Ready};
pub use error::{Phase, UpstreamError};
pub use identity::{xtext, ClientIdentity, ForwardClient, IdentityError};
