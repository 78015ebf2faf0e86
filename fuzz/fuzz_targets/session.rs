//! The inbound SMTP session (src/smtp/session.rs) fed arbitrary byte streams by a scripted
//! driver that answers every question.
//!
//! Input: byte 0 picks the listener configuration and how the stream is split into reads,
//! byte 1 the length of a script of answers that follows, then the client's bytes.
//!
//! Invariants checked while driving (SECURITY.md I1, I2, I9, I11):
//! - no panic; every reply is well-formed (code 200..=599, one CRLF per line, `-` on all but the
//!   last line, printable ASCII, an enhanced code of the reply's own class);
//! - nothing after `Close`;
//! - `Mail` only outside a transaction; `Rcpt`, `Body` and `MessageEnd` only between a MAIL the
//!   upstream accepted and its `MessageEnd`/`MessageAbort`; a new MAIL never starts while content
//!   of the previous transaction is still held (it was neither ended nor aborted);
//! - the content of a message that reaches `MessageEnd` has only CRLF line ends, no NUL, no line
//!   longer than the limit and no more octets than the limit, and had an accepted recipient;
//! - after `StartTls`, nothing but a new EHLO/HELO moves the session on: no MAIL, RCPT, content
//!   or AUTH from before; AUTH only under TLS;
//! - unless STARTTLS, a local failure or content pipelined behind a refused DATA was involved,
//!   the outcome does not depend on how the bytes were split into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::smtp::{Action, Reply, Session, SessionConfig, UpstreamFeatures};

struct Run {
    log: Vec<String>,
    /// STARTTLS, a local failure or a refused DATA with bytes behind it happened: timing may
    /// legitimately change the outcome.
    timing_sensitive: bool,
}

fn check_reply(r: &Reply) {
    let wire = r.to_bytes();
    assert!((200..=599).contains(&r.code()), "{r}");
    if let Some(status) = r.status() {
        assert_eq!(u16::from(status.0), r.code() / 100, "{r}");
    }
    let text = std::str::from_utf8(&wire).expect("ASCII reply");
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    assert!(
        text.ends_with("\r\n") && lines.len() == r.lines().len(),
        "{text:?}"
    );
    for (i, line) in lines.iter().enumerate() {
        let b = line.as_bytes();
        let sep = if i + 1 == lines.len() { b' ' } else { b'-' };
        assert!(b.len() >= 4 && b[3] == sep, "{text:?}");
        assert!(b.iter().all(|&c| (b' '..=b'~').contains(&c)), "{text:?}");
    }
}

fn crlf_only(content: &[u8]) -> bool {
    content.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => content.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && content[i - 1] == b'\r',
        _ => true,
    })
}

fn drive(cfg: &SessionConfig, script: &[u8], stream: &[u8], split: usize) -> Run {
    let mut s = Session::new(cfg.clone());
    let mut run = Run {
        log: Vec::new(),
        timing_sensitive: false,
    };
    let mut question = 0usize;
    let mut next = || {
        let c = if script.is_empty() {
            0
        } else {
            script[question % script.len()]
        };
        question += 1;
        c
    };
    let mut tls = cfg.implicit_tls;
    let mut tx_open = false;
    let mut recipients = 0usize;
    let mut content: Vec<u8> = Vec::new();
    let mut upstream_size: Option<u64> = None;
    let mut awaiting_ehlo_after_tls = false;
    let mut chunks = stream.chunks(split.max(1));
    loop {
        while let Some(action) = s.next_action() {
            match action {
                Action::Send(r) => {
                    check_reply(&r);
                    // Whether content already sat behind a refused DATA depends on the reads.
                    if r.lines()
                        .iter()
                        .any(|l| l.contains("content sent before 354"))
                    {
                        run.timing_sensitive = true;
                    }
                    run.log
                        .push(String::from_utf8_lossy(&r.to_bytes()).into_owned());
                }
                Action::Ehlo => {
                    awaiting_ehlo_after_tls = false;
                    let c = next();
                    let f = UpstreamFeatures {
                        size: (c & 1 != 0).then_some(u64::from(c) * 4),
                        eightbitmime: true,
                        smtputf8: c & 2 != 0,
                        dsn: c & 4 != 0,
                        auth: if c & 8 != 0 {
                            vec!["PLAIN".into(), "LOGIN".into()]
                        } else {
                            Vec::new()
                        },
                    };
                    // After HELO the session answers without the upstream's extensions, so its
                    // SIZE bound is ours alone.
                    let esmtp = s.helo().is_none_or(|(_, esmtp)| esmtp);
                    upstream_size = f.size.filter(|&n| n > 0 && esmtp);
                    run.log.push("EHLO".into());
                    s.features(f);
                }
                Action::Mail(p) => {
                    assert!(!tx_open, "MAIL inside an open transaction");
                    assert!(!awaiting_ehlo_after_tls, "MAIL from before STARTTLS");
                    assert!(
                        content.is_empty(),
                        "content of an earlier transaction held at MAIL"
                    );
                    assert!(!p.wire().contains(['\r', '\n']));
                    run.log.push(format!("MAIL {}", p.wire()));
                    let reply = match next() % 4 {
                        0 | 1 => Reply::new(250, "2.1.0", "OK"),
                        2 => Reply::new(451, "4.3.0", "later"),
                        _ => Reply::new(550, "5.7.1", "no"),
                    };
                    if reply.is_positive() {
                        tx_open = true;
                        recipients = 0;
                    }
                    s.answer(reply);
                }
                Action::Rcpt(p) => {
                    assert!(tx_open, "RCPT outside a transaction");
                    assert!(!p.wire().contains(['\r', '\n']));
                    run.log.push(format!("RCPT {}", p.wire()));
                    let reply = match next() % 4 {
                        0 | 1 => Reply::new(250, "2.1.5", "OK"),
                        2 => Reply::new(450, "4.2.0", "later"),
                        _ => Reply::new(550, "5.1.1", "no"),
                    };
                    if reply.is_positive() {
                        recipients += 1;
                    }
                    s.answer(reply);
                }
                Action::Body(b) => {
                    assert!(tx_open, "content outside a transaction");
                    assert!(!awaiting_ehlo_after_tls);
                    content.extend_from_slice(&b);
                    // Bare CR/LF may not even be passed on in pieces (a trailing CR of a
                    // chunk is completed by the next one).
                    let settled = content.strip_suffix(b"\r").unwrap_or(&content);
                    assert!(crlf_only(settled), "bare CR/LF handed to the driver");
                    if script.first() == Some(&0xEE) && content.len() > 8 {
                        run.timing_sensitive = true;
                        s.fail_local(Reply::new(421, "4.3.0", "Local error"));
                    }
                }
                Action::MessageEnd => {
                    assert!(tx_open, "end of a message outside a transaction");
                    assert!(recipients > 0, "message without an accepted recipient");
                    assert!(crlf_only(&content), "bare CR/LF in a finished message");
                    assert!(!content.contains(&0), "NUL in a finished message");
                    let max =
                        upstream_size.map_or(cfg.max_message_size, |u| u.min(cfg.max_message_size));
                    assert!(content.len() as u64 <= max, "{} > {max}", content.len());
                    let longest = content
                        .split(|&b| b == b'\n')
                        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len())
                        .max()
                        .unwrap_or(0);
                    assert!(longest <= cfg.max_line_length, "line of {longest}");
                    run.log
                        .push(format!("END {:?}", String::from_utf8_lossy(&content)));
                    content.clear();
                    tx_open = false;
                    let reply = match next() % 3 {
                        0 => Reply::new(250, "2.0.0", "queued"),
                        1 => Reply::new(451, "4.3.0", "later"),
                        _ => Reply::new(554, "5.6.0", "no"),
                    };
                    s.answer(reply);
                }
                Action::MessageAbort => {
                    run.log.push("ABORT".into());
                    content.clear();
                    tx_open = false;
                }
                Action::Reset => {
                    assert!(content.is_empty(), "RSET upstream with content still held");
                    run.log.push("RESET".into());
                    tx_open = false;
                }
                Action::Auth(secret) => {
                    assert!(tls, "AUTH passed on without TLS");
                    assert!(!awaiting_ehlo_after_tls);
                    assert!(!secret.expose().contains(&b'\n'));
                    run.log.push("AUTH".into());
                    let reply = match next() % 3 {
                        0 => Reply::new(235, "2.7.0", "OK"),
                        1 => Reply::plain(334, vec![String::new()]),
                        _ => Reply::new(535, "5.7.8", "no"),
                    };
                    s.answer(reply);
                }
                Action::StartTls => {
                    assert!(!tls, "second STARTTLS");
                    assert!(!tx_open, "STARTTLS inside a transaction");
                    run.timing_sensitive = true;
                    run.log.push("STARTTLS".into());
                    s.tls_established();
                    tls = true;
                    awaiting_ehlo_after_tls = true;
                }
                Action::Close => {
                    run.log.push("CLOSE".into());
                    for rest in chunks.by_ref() {
                        s.feed(rest);
                    }
                    assert!(s.next_action().is_none(), "an action after Close");
                    assert!(s.is_closed());
                    return run;
                }
            }
        }
        match chunks.next() {
            Some(c) => s.feed(c),
            None => return run,
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let [flags, script_len, rest @ ..] = input else {
        return;
    };
    let script_len = usize::from(*script_len % 32).min(rest.len());
    let (script, stream) = rest.split_at(script_len);
    let small = flags & 8 != 0;
    let cfg = SessionConfig {
        hostname: "gw.test".into(),
        max_command_line: if small { 64 } else { 512 },
        max_message_size: if small { 200 } else { 50 * 1024 * 1024 },
        max_recipients: if small { 3 } else { 1000 },
        max_line_length: if small { 20 } else { 128 * 1024 },
        starttls: flags & 1 != 0,
        implicit_tls: flags & 2 != 0,
        require_tls: flags & 4 != 0,
        max_errors: if small { 5 } else { 20 },
        max_junk_commands: if small { 4 } else { 100 },
    };
    let split = [1, 2, 3, 5, 7, 13, 64, 4096][usize::from(flags >> 5)];
    let pieces = drive(&cfg, script, stream, split);
    let whole = drive(&cfg, script, stream, stream.len());
    if !pieces.timing_sensitive && !whole.timing_sensitive {
        assert_eq!(
            pieces.log, whole.log,
            "outcome depends on the read size {split}"
        );
    }
});
