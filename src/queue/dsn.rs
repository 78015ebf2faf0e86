//! Delivery status notifications (RFC 3464) for queued copies that failed for good, honouring
//! the client's DSN parameters (RFC 3461): NOTIFY decides whether a recipient is reported,
//! ORCPT becomes Original-Recipient, ENVID Original-Envelope-Id, RET what is returned.
//!
//! What is returned never contains plaintext of a copy that was to be encrypted: the queue holds
//! only its sealed form, and a DSN of an encrypted copy carries its outer header section only
//! (`text/rfc822-headers`), whatever RET says: the sealed body would be useless to the sender
//! (it is encrypted to the recipients) and the outer header is what the upstream already saw.
//! A plain copy is returned whole only with RET=FULL; otherwise, and by default, its header.

use super::{xtext_decode, Meta, Recipient};

/// Whether the sender asked to hear that delivery to this recipient is delayed (only when
/// NOTIFY names DELAY: sealgate sends no delay warnings by default).
pub fn notify_delay(r: &Recipient) -> bool {
    r.path
        .param("NOTIFY")
        .is_some_and(|v| v.split(',').any(|w| w.trim().eq_ignore_ascii_case("DELAY")))
}

/// What a DSN reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Failed for good.
    Failed,
    /// Still being retried (RFC 3464 "delayed"; the message is not returned, only its header).
    Delayed { retry_until: u64 },
}

/// Whether the sender asked to hear about this recipient's failure (RFC 3461 4.1: NOTIFY
/// absent means FAILURE; NEVER means nothing at all).
pub fn notify_failure(r: &Recipient) -> bool {
    match r.path.param("NOTIFY") {
        None => true,
        Some(v) => v
            .split(',')
            .any(|w| w.trim().eq_ignore_ascii_case("FAILURE")),
    }
}

/// The enhanced status code of a stored reply line (`550 5.1.1 ...` -> `5.1.1`), or the
/// generic one of its class.
fn status_of(reply: &str) -> String {
    let mut words = reply.split_ascii_whitespace();
    let code = words.next().unwrap_or("");
    if let Some(s) = words.next() {
        if let Some(e) = crate::smtp::EnhancedCode::parse(s) {
            return e.to_string();
        }
    }
    match code.as_bytes().first() {
        Some(b'4') => "4.0.0".into(),
        _ => "5.0.0".into(),
    }
}

/// RFC 5322 date-time in UTC for seconds since the epoch.
pub fn rfc5322_date(secs: u64) -> String {
    let (y, m, d, days, rem) = crate::store::civil_date(secs);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d} {} {y:04} {:02}:{:02}:{:02} +0000",
        WD[days.rem_euclid(7) as usize],
        MO[(m - 1).clamp(0, 11) as usize],
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// The header section of a message (up to and including the empty line).
fn header_section(content: &[u8]) -> &[u8] {
    if let Some(i) = content.windows(4).position(|w| w == b"\r\n\r\n") {
        return &content[..i + 2];
    }
    if let Some(i) = content.windows(2).position(|w| w == b"\n\n") {
        return &content[..i + 1];
    }
    content
}

/// Keeps a value on one line and printable (addresses and replies come from outside).
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub struct DsnContext<'a> {
    /// Our name (Reporting-MTA, From: MAILER-DAEMON@...).
    pub hostname: &'a str,
    /// The upstream (Remote-MTA).
    pub remote: &'a str,
    pub now: u64,
    pub action: Action,
}

/// The DSN for `failed` (or delayed) recipients of the queued copy `meta` (whose content is
/// `content`): a multipart/report of a note for the sender, the delivery status, and the
/// returned message or its header.
pub fn build(meta: &Meta, failed: &[&Recipient], content: &[u8], ctx: &DsnContext<'_>) -> Vec<u8> {
    let delayed = match ctx.action {
        Action::Failed => None,
        Action::Delayed { retry_until } => Some(retry_until),
    };
    let boundary = format!("=_dsn_{}", meta.id);
    let mut out = header_and_note(meta, failed, ctx, delayed, &boundary);
    out.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    out.push_str(&delivery_status(meta, ctx));
    for r in failed {
        out.push_str(&recipient_status(r, ctx, delayed));
    }
    let mut bytes = out.into_bytes();
    append_returned(&mut bytes, meta, content, delayed, &boundary);
    bytes.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    bytes
}

/// The DSN's header section and its first part: a note for the sender, one line a recipient.
fn header_and_note(
    meta: &Meta,
    failed: &[&Recipient],
    ctx: &DsnContext<'_>,
    delayed: Option<u64>,
    boundary: &str,
) -> String {
    let (subject, what) = match delayed {
        None => (
            "Undelivered Mail Returned to Sender".to_string(),
            "Your message could not be delivered to the recipients below.".to_string(),
        ),
        Some(until) => (
            "Delayed Mail (still being retried)".to_string(),
            format!(
                "Your message has not been delivered yet to the recipients below.\r\n\
                 sealgate keeps trying until {}; you need not send it again.",
                rfc5322_date(until)
            ),
        ),
    };
    let host = clean(ctx.hostname);
    let mut out = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
         To: <{}>\r\n\
         Subject: {subject}\r\n\
         Date: {}\r\n\
         Message-ID: <{}.{}.dsn@{host}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a delivery status notification in MIME format.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         This is sealgate at {host}.\r\n\
         \r\n\
         {what}\r\n\
         \r\n",
        clean(&meta.sender.address),
        rfc5322_date(ctx.now),
        meta.id,
        ctx.now,
    );
    for r in failed {
        out.push_str(&format!(
            "<{}>: {}\r\n",
            clean(&r.path.address),
            clean(r.reply.as_deref().unwrap_or("failed"))
        ));
    }
    out
}

/// The per-message fields of the message/delivery-status part (RFC 3464 2.2).
fn delivery_status(meta: &Meta, ctx: &DsnContext<'_>) -> String {
    let mut out = format!("Reporting-MTA: dns; {}\r\n", clean(ctx.hostname));
    if let Some(envid) = meta.sender.param("ENVID") {
        out.push_str(&format!(
            "Original-Envelope-Id: {}\r\n",
            clean(&xtext_decode(envid))
        ));
    }
    out.push_str(&format!("Arrival-Date: {}\r\n", rfc5322_date(meta.created)));
    out
}

/// One recipient's fields of the message/delivery-status part (RFC 3464 2.3), after an empty
/// line.
fn recipient_status(r: &Recipient, ctx: &DsnContext<'_>, delayed: Option<u64>) -> String {
    let reply = r.reply.as_deref().unwrap_or("550 5.0.0 failed");
    let mut out = format!(
        "\r\nFinal-Recipient: rfc822; {}\r\n",
        clean(&r.path.address)
    );
    if let Some(orcpt) = r.path.param("ORCPT") {
        let decoded = xtext_decode(orcpt);
        let (kind, addr) = decoded.split_once(';').unwrap_or(("rfc822", &decoded));
        out.push_str(&format!(
            "Original-Recipient: {}; {}\r\n",
            clean(kind.trim()),
            clean(addr.trim())
        ));
    }
    out.push_str(&format!(
        "Action: {}\r\nStatus: {}\r\nRemote-MTA: dns; {}\r\nDiagnostic-Code: smtp; {}\r\nLast-Attempt-Date: {}\r\n",
        if delayed.is_some() { "delayed" } else { "failed" },
        status_of(reply),
        clean(ctx.remote),
        clean(reply),
        rfc5322_date(ctx.now)
    ));
    if let Some(until) = delayed {
        out.push_str(&format!("Will-Retry-Until: {}\r\n", rfc5322_date(until)));
    }
    out
}

/// The third part: the whole message only for RET=FULL on a plain copy that failed for good,
/// else its header section (see the module's documentation); nothing without content.
fn append_returned(
    bytes: &mut Vec<u8>,
    meta: &Meta,
    content: &[u8],
    delayed: Option<u64>,
    boundary: &str,
) {
    if content.is_empty() {
        bytes.extend_from_slice(b"\r\n");
        return;
    }
    let full = meta
        .sender
        .param("RET")
        .is_some_and(|v| v.eq_ignore_ascii_case("FULL"));
    let (kind, body) = if full && !meta.encrypted && delayed.is_none() {
        ("message/rfc822", content)
    } else {
        ("text/rfc822-headers", header_section(content))
    };
    bytes.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Type: {kind}\r\n\r\n").as_bytes());
    bytes.extend_from_slice(body);
    if !body.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_the_shared_civil_calendar() {
        assert_eq!(crate::store::fmt_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            crate::store::fmt_time(951_782_400 + 3_661),
            "2000-02-29 01:01:01 UTC"
        );
        assert_eq!(
            rfc5322_date(1_798_761_599),
            "Thu, 31 Dec 2026 23:59:59 +0000"
        );
    }
    use crate::queue::{RcptState, StoredPath, META_VERSION};

    fn meta(ret: Option<&str>, encrypted: bool) -> Meta {
        let mut params = vec![("ENVID".to_string(), Some("env+2B1".to_string()))];
        if let Some(r) = ret {
            params.push(("RET".into(), Some(r.into())));
        }
        Meta {
            version: META_VERSION,
            id: "abc".into(),
            session: "s".into(),
            sender: StoredPath {
                address: "alice@example.org".into(),
                params,
            },
            recipients: vec![Recipient {
                path: StoredPath {
                    address: "bob@example.net".into(),
                    params: vec![
                        ("NOTIFY".into(), Some("FAILURE,DELAY".into())),
                        ("ORCPT".into(), Some("rfc822;Bob+2Bx@example.net".into())),
                    ],
                },
                state: RcptState::Failed,
                reply: Some("550 5.1.1 no such user".into()),
                reported: false,
                delay_reported: false,
            }],
            encrypted,
            created: 0,
            attempts: 1,
            next_attempt: 0,
            last_reply: None,
            reason: String::new(),
            size: 0,
            bounce_requested: false,
            client: None,
        }
    }

    const CONTENT: &[u8] = b"Subject: hi\r\nFrom: alice@example.org\r\n\r\nsecret body\r\n";

    #[test]
    fn report_fields_follow_the_envelope() {
        let m = meta(Some("FULL"), false);
        let failed: Vec<&Recipient> = m.recipients.iter().collect();
        let ctx = DsnContext {
            hostname: "gw.test",
            remote: "mx.test",
            now: 86_400 * 365,
            action: Action::Failed,
        };
        let dsn = String::from_utf8(build(&m, &failed, CONTENT, &ctx)).unwrap();
        for needle in [
            "Original-Envelope-Id: env+1\r\n",
            "Final-Recipient: rfc822; bob@example.net\r\n",
            "Original-Recipient: rfc822; Bob+x@example.net\r\n",
            "Action: failed\r\nStatus: 5.1.1\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n",
            "Content-Type: message/rfc822\r\n",
            "secret body",
            "Date: Fri, 1 Jan 1971 00:00:00 +0000\r\n",
        ] {
            assert!(dsn.contains(needle), "{needle:?} missing in\n{dsn}");
        }
    }

    #[test]
    fn encrypted_copies_and_ret_hdrs_return_headers_only() {
        let ctx = DsnContext {
            hostname: "gw.test",
            remote: "mx.test",
            now: 0,
            action: Action::Failed,
        };
        for m in [
            meta(Some("FULL"), true),
            meta(Some("HDRS"), false),
            meta(None, false),
        ] {
            let failed: Vec<&Recipient> = m.recipients.iter().collect();
            let dsn = String::from_utf8(build(&m, &failed, CONTENT, &ctx)).unwrap();
            assert!(dsn.contains("Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\n"));
            assert!(!dsn.contains("secret body"), "{dsn}");
        }
    }

    #[test]
    fn a_delay_report_says_delayed_and_returns_headers_only() {
        let mut m = meta(Some("FULL"), false);
        m.recipients[0].reply = Some("451 4.2.2 mailbox full".into());
        let failed: Vec<&Recipient> = m.recipients.iter().collect();
        let ctx = DsnContext {
            hostname: "gw.test",
            remote: "mx.test",
            now: 0,
            action: Action::Delayed {
                retry_until: 86_400,
            },
        };
        let dsn = String::from_utf8(build(&m, &failed, CONTENT, &ctx)).unwrap();
        for needle in [
            "Subject: Delayed Mail",
            "Action: delayed\r\nStatus: 4.2.2\r\n",
            "Will-Retry-Until: Fri, 2 Jan 1970 00:00:00 +0000\r\n",
            "Content-Type: text/rfc822-headers\r\n",
        ] {
            assert!(dsn.contains(needle), "{needle:?} missing in\n{dsn}");
        }
        assert!(!dsn.contains("secret body"));
        let mut r = m.recipients.remove(0);
        assert!(notify_delay(&r));
        r.path.params.clear();
        assert!(!notify_delay(&r), "no delay warning unless asked for");
    }

    #[test]
    fn notify_decides() {
        let mut r = meta(None, false).recipients.remove(0);
        assert!(notify_failure(&r));
        r.path.params = vec![("NOTIFY".into(), Some("NEVER".into()))];
        assert!(!notify_failure(&r));
        r.path.params = vec![("NOTIFY".into(), Some("SUCCESS,DELAY".into()))];
        assert!(!notify_failure(&r));
        r.path.params.clear();
        assert!(notify_failure(&r));
    }
}
