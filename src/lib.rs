//! sealgate: a transparent SMTP proxy that signs and encrypts mail before relaying it over
//! forced, verified TLS.
//!
//! One message flows one way, and the modules follow it:
//!
//! | step | module |
//! |---|---|
//! | accept a connection, run its I/O | [`serve::listener`], [`serve::driver`] |
//! | speak SMTP to the client (sans-IO: bytes in, actions out) | [`smtp`] |
//! | pair the client with the upstream, decide, send | [`serve::relay`] |
//! | decide per recipient (pure, time passed in) | [`policy`] |
//! | plan the copies and seal them (pure) | [`transform`], over [`mime`], [`smime`], [`openpgp`] |
//! | speak SMTP to the upstream MTA (typed states, forced TLS) | [`upstream`] |
//! | keep what a later copy could not deliver | [`queue`] |
//!
//! Beside the flow: [`config`] (the file, one section at a time, and TLS material),
//! [`store`] (the sled key store), [`cli`] (the `sealgate` commands), and [`address`], the one
//! mailbox type every comparison of addresses uses.

pub mod address;
pub mod cli;
pub mod config;
pub mod mime;
pub mod openpgp;
pub mod policy;
pub mod queue;
pub mod serve;
pub mod smime;
pub mod smtp;
pub mod store;
pub mod transform;
pub mod upstream;
