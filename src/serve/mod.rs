//! The running proxy: one message flows one way through these modules.
//!
//! [`listener`] accepts connections (limits, `allow_from`, PROXY headers through
//! [`proxy_protocol`]) -> [`driver`] runs one connection's I/O around the sans-IO
//! [`crate::smtp::Session`] -> [`relay`] answers the session's actions: it pairs the client
//! with an upstream session ([`crate::upstream`]), asks the policy at RCPT and the transform at
//! end of data, and sends the copies (or queues them, [`crate::queue`]).

pub mod driver;
pub mod listener;
pub mod proxy_protocol;
pub mod relay;
pub mod replies;
