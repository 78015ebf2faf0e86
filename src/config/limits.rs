//! `[limits]`: sizes, counts and timeouts that bound what one client (and all of them) can
//! make the proxy hold or wait for.

use std::time::Duration;

use serde::Deserialize;

use super::{Collector, Positive};

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_command_line: usize,
    pub max_line_length: usize,
    pub max_errors: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub upstream_timeout: Duration,
    pub connect_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Longest life of one client connection, however active.
    pub session_timeout: Duration,
    /// Message bytes kept in memory before spilling to a temporary file.
    pub memory_spool: usize,
    /// Bounds of MIME processing (header section, fields, nesting, parts).
    pub mime: crate::mime::Limits,
    /// Simultaneous connections from one client address.
    pub max_connections_per_ip: usize,
    /// Commands that make no progress (NOOP, RSET, VRFY, HELP, BDAT 0, repeated EHLO/HELO)
    /// tolerated between two messages.
    pub max_junk_commands: usize,
    /// Slowest message content accepted, in bytes per second over each `data_rate_window`.
    pub min_data_rate: u64,
    pub data_rate_window: Duration,
    /// Message bytes that planning and sealing may hold at once, over all sessions.
    pub max_sealing_memory: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    max_message_size: Option<u64>,
    max_recipients: Option<usize>,
    max_connections: Option<usize>,
    max_command_line: Option<usize>,
    max_line_length: Option<usize>,
    max_errors: Option<usize>,
    command_timeout: Option<u64>,
    data_timeout: Option<u64>,
    upstream_timeout: Option<u64>,
    connect_timeout: Option<u64>,
    shutdown_grace: Option<u64>,
    session_timeout: Option<u64>,
    memory_spool: Option<usize>,
    max_header_bytes: Option<usize>,
    max_header_fields: Option<usize>,
    max_mime_depth: Option<usize>,
    max_mime_parts: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_junk_commands: Option<usize>,
    min_data_rate: Option<u64>,
    data_rate_window: Option<u64>,
    max_sealing_memory: Option<u64>,
}

/// `[limits]`: every key optional and greater than 0 (but `min_data_rate`, where 0 turns the
/// check off); then the limits that must agree with each other.
pub(super) fn section(l: RawLimits, c: &mut Collector) -> Limits {
    let mut p = c.positive("limits");
    let limits = Limits {
        max_message_size: p.get("max_message_size", l.max_message_size, 50 * 1024 * 1024),
        max_recipients: p.get("max_recipients", l.max_recipients, 1000),
        max_connections: p.get("max_connections", l.max_connections, 1000),
        max_command_line: p.get("max_command_line", l.max_command_line, 512),
        max_line_length: p.get("max_line_length", l.max_line_length, 128 * 1024),
        max_errors: p.get("max_errors", l.max_errors, 20),
        command_timeout: p.secs("command_timeout", l.command_timeout, 300),
        data_timeout: p.secs("data_timeout", l.data_timeout, 180),
        upstream_timeout: p.secs("upstream_timeout", l.upstream_timeout, 300),
        connect_timeout: p.secs("connect_timeout", l.connect_timeout, 30),
        shutdown_grace: p.secs("shutdown_grace", l.shutdown_grace, 30),
        session_timeout: p.secs("session_timeout", l.session_timeout, 3600),
        memory_spool: p.get("memory_spool", l.memory_spool, 1024 * 1024),
        mime: mime(&l, &mut p),
        max_connections_per_ip: p.get("max_connections_per_ip", l.max_connections_per_ip, 20),
        max_junk_commands: p.get("max_junk_commands", l.max_junk_commands, 100),
        // 0 turns the check off (a link known to be that slow).
        min_data_rate: l.min_data_rate.unwrap_or(1024),
        data_rate_window: p.secs("data_rate_window", l.data_rate_window, 30),
        max_sealing_memory: p.get("max_sealing_memory", l.max_sealing_memory, 4 << 30),
    };
    agree(&limits, c);
    limits
}

/// The bounds of MIME processing; defaults from [`crate::mime::Limits`].
fn mime(l: &RawLimits, p: &mut Positive<'_>) -> crate::mime::Limits {
    let d = crate::mime::Limits::default();
    crate::mime::Limits {
        max_header_bytes: p.get("max_header_bytes", l.max_header_bytes, d.max_header_bytes),
        max_header_fields: p.get(
            "max_header_fields",
            l.max_header_fields,
            d.max_header_fields,
        ),
        max_depth: p.get("max_mime_depth", l.max_mime_depth, d.max_depth),
        max_parts: p.get("max_mime_parts", l.max_mime_parts, d.max_parts),
    }
}

/// Limits that bound each other or have a floor or ceiling of their own.
fn agree(limits: &Limits, c: &mut Collector) {
    if limits.max_sealing_memory < limits.max_message_size {
        c.push(
            "limits.max_sealing_memory",
            "must be at least max_message_size (one message must fit)",
        );
    }
    if limits.max_connections > 1_000_000 {
        c.push("limits.max_connections", "must be at most 1000000");
    }
    if limits.max_command_line < 512 {
        c.push(
            "limits.max_command_line",
            "must be at least 512 (RFC 5321 4.5.3.1.4)",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors, valid};
    use super::super::Config;
    use super::*;

    fn limits(extra: &str) -> Limits {
        let (dir, text) = valid(&format!("[limits]\n{extra}"));
        Config::parse(&text, dir.path()).unwrap().limits
    }

    #[test]
    fn defaults_and_every_key() {
        let d = limits("");
        assert_eq!(d.max_connections, 1000);
        assert_eq!(d.data_timeout, Duration::from_secs(180));
        assert_eq!(d.min_data_rate, 1024);
        assert_eq!(d.max_sealing_memory, 4 << 30);
        assert_eq!(d.mime, crate::mime::Limits::default());
        let l = limits(
            "max_message_size = 1000\nmax_recipients = 2\nmax_connections = 3\n\
             max_command_line = 600\nmax_line_length = 5\nmax_errors = 6\ncommand_timeout = 7\n\
             data_timeout = 8\nupstream_timeout = 9\nconnect_timeout = 10\nshutdown_grace = 11\n\
             session_timeout = 12\nmemory_spool = 13\nmax_header_bytes = 14\n\
             max_header_fields = 15\nmax_mime_depth = 16\nmax_mime_parts = 17\n\
             max_connections_per_ip = 18\nmax_junk_commands = 19\nmin_data_rate = 0\n\
             data_rate_window = 21\nmax_sealing_memory = 2000\n",
        );
        let counts = [
            l.max_recipients,
            l.max_connections,
            l.max_command_line,
            l.max_line_length,
            l.max_errors,
            l.memory_spool,
            l.mime.max_header_bytes,
            l.mime.max_header_fields,
            l.mime.max_depth,
            l.mime.max_parts,
            l.max_connections_per_ip,
            l.max_junk_commands,
        ];
        assert_eq!(counts, [2, 3, 600, 5, 6, 13, 14, 15, 16, 17, 18, 19]);
        let secs = [
            l.command_timeout,
            l.data_timeout,
            l.upstream_timeout,
            l.connect_timeout,
            l.shutdown_grace,
            l.session_timeout,
            l.data_rate_window,
        ];
        assert_eq!(secs.map(|d| d.as_secs()), [7, 8, 9, 10, 11, 12, 21]);
        assert_eq!((l.max_message_size, l.min_data_rate), (1000, 0));
        assert_eq!(l.max_sealing_memory, 2000);
    }

    #[test]
    fn zeros_and_disagreements_are_named() {
        let errs = errors("[limits]\nmax_mime_depth = 0\ndata_timeout = 0\nmin_data_rate = 0\n");
        let limit_errors: Vec<_> = errs.iter().filter(|e| e.starts_with("limits.")).collect();
        assert_eq!(
            limit_errors,
            [
                "limits.data_timeout: must be greater than 0",
                "limits.max_mime_depth: must be greater than 0"
            ],
            "{errs:?}"
        );
        let errs = errors(
            "[limits]\nmax_message_size = 100\nmax_sealing_memory = 99\n\
             max_connections = 1000001\nmax_command_line = 511\n",
        );
        for needle in [
            "limits.max_sealing_memory: must be at least max_message_size",
            "limits.max_connections: must be at most 1000000",
            "limits.max_command_line: must be at least 512",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(needle)),
                "{needle}: {errs:?}"
            );
        }
    }
}
