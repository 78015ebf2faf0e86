//! sealgate: a transparent SMTP proxy that signs and encrypts mail before relaying it over
//! forced, verified TLS.
//!
//! One message flows one way: [`server`] (listener) -> [`smtp::Session`] (sans-IO) ->
//! [`relay`] (ties the session to its upstream) -> [`upstream`] (forced-TLS client).

pub mod address;
pub mod config;
pub mod demo;
pub mod explain;
pub mod inbound;
pub mod keys_cli;
pub mod mime;
pub mod netlist;
pub mod openpgp;
pub mod policy;
pub mod proxy_protocol;
pub mod queue;
pub mod relay;
pub mod server;
pub mod sink;
pub mod smime;
pub mod smtp;
pub mod spool;
pub mod store;
pub mod tls;
pub mod transform;
pub mod upstream;
