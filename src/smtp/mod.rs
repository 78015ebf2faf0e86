//! The SMTP protocol, without I/O: replies, commands, content framing and the server session.

pub mod auth;
pub mod command;
pub mod data;
pub mod reply;
pub mod session;
pub mod spool;

pub use reply::{EnhancedCode, Reply, ReplyError, ReplyParser};
pub use session::{Action, Secret, Session, SessionConfig, UpstreamFeatures};
