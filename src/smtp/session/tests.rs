//! The session fed by a scripted driver, with every input split in every way that matters.

use super::*;

/// What a scripted driver saw.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    replies: String,
    events: Vec<String>,
    messages: Vec<Vec<u8>>,
    closed: bool,
}

fn features() -> UpstreamFeatures {
    UpstreamFeatures {
        size: None,
        eightbitmime: true,
        smtputf8: true,
        dsn: true,
        auth: vec!["PLAIN".into(), "LOGIN".into()],
    }
}

/// Feeds `input` in pieces of `split` bytes, answering every question like an upstream that
/// accepts everything except recipients starting with "bad".
fn drive(cfg: SessionConfig, feats: UpstreamFeatures, input: &[u8], split: usize) -> Outcome {
    let mut s = Session::new(cfg);
    let mut o = Outcome::default();
    let mut body = Vec::new();
    let mut chunks = input.chunks(split.max(1));
    loop {
        while let Some(action) = s.next_action() {
            match action {
                Action::Send(r) => o.replies.push_str(&String::from_utf8_lossy(&r.to_bytes())),
                Action::Ehlo => s.features(feats.clone()),
                Action::Mail(p) => {
                    o.events.push(format!("MAIL {}", p.wire()));
                    s.answer(Reply::new(250, "2.1.0", "OK"));
                }
                Action::Rcpt(p) => {
                    o.events.push(format!("RCPT {}", p.wire()));
                    if p.address.starts_with("bad") {
                        s.answer(Reply::new(550, "5.1.1", "No such user"));
                    } else {
                        s.answer(Reply::new(250, "2.1.5", "OK"));
                    }
                }
                Action::Body(b) => body.extend_from_slice(&b),
                Action::MessageEnd => {
                    o.events.push("END".into());
                    o.messages.push(std::mem::take(&mut body));
                    s.answer(Reply::new(250, "2.0.0", "queued"));
                }
                Action::MessageAbort => {
                    o.events.push("ABORT".into());
                    body.clear();
                }
                Action::Reset => o.events.push("RESET".into()),
                Action::Auth(secret) => {
                    o.events
                        .push(format!("AUTH {}", String::from_utf8_lossy(secret.expose())));
                    if secret.expose() == b"AUTH LOGIN" {
                        s.answer(Reply::plain(334, vec!["VXNlcm5hbWU6".into()]));
                    } else {
                        s.answer(Reply::new(235, "2.7.0", "Authenticated"));
                    }
                }
                Action::StartTls => {
                    o.events.push("STARTTLS".into());
                    s.tls_established();
                }
                Action::Close => {
                    o.closed = true;
                    return o;
                }
            }
        }
        match chunks.next() {
            Some(c) => s.feed(c),
            None => return o,
        }
    }
}

fn codes(o: &Outcome) -> Vec<String> {
    o.replies
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| l[..3].to_string())
        .collect()
}

fn plain_cfg() -> SessionConfig {
    SessionConfig {
        hostname: "gw.test".into(),
        ..SessionConfig::default()
    }
}

const SIMPLE: &[u8] = b"EHLO c.test\r\nMAIL FROM:<a@x.test> SIZE=20\r\nRCPT TO:<b@y.test> NOTIFY=SUCCESS,FAILURE\r\nDATA\r\nSubject: t\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n";

#[test]
fn a_transaction_is_the_same_however_the_bytes_are_split() {
    let whole = drive(plain_cfg(), features(), SIMPLE, SIMPLE.len());
    assert_eq!(
        codes(&whole),
        ["220", "250", "250", "250", "354", "250", "221"]
    );
    assert_eq!(
        whole.events,
        [
            "MAIL <a@x.test> SIZE=20",
            "RCPT <b@y.test> NOTIFY=SUCCESS,FAILURE",
            "END"
        ]
    );
    assert_eq!(
        whole.messages,
        [b"Subject: t\r\n\r\n.dot\r\nbody\r\n".to_vec()]
    );
    assert!(whole.closed);
    for split in 1..SIMPLE.len() {
        assert_eq!(
            drive(plain_cfg(), features(), SIMPLE, split),
            whole,
            "split {split}"
        );
    }
}

#[test]
fn ehlo_advertises_upstream_features_and_size() {
    let mut f = features();
    f.size = Some(1000);
    f.dsn = false;
    let o = drive(plain_cfg(), f, b"EHLO c\r\n", 64);
    assert!(o.replies.contains("250-SIZE 1000\r\n"), "{}", o.replies);
    assert!(o.replies.contains("SMTPUTF8"));
    assert!(!o.replies.contains("DSN"));
    assert!(!o.replies.contains("STARTTLS"), "not a starttls listener");
    assert!(!o.replies.contains("AUTH"), "no AUTH before TLS");
    let o = drive(plain_cfg(), UpstreamFeatures::default(), b"EHLO c\r\n", 64);
    assert!(!o.replies.contains("SMTPUTF8"));
    assert!(o.replies.contains(&format!("SIZE {}", 50 * 1024 * 1024)));
}

#[test]
fn pipelined_messages_after_a_proper_end_are_separate_transactions() {
    let input = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\none\r\n.\r\nMAIL FROM:<a@x>\r\nRCPT TO:<c@y>\r\nDATA\r\ntwo\r\n.\r\n";
    for split in [1, 7, input.len()] {
        let o = drive(plain_cfg(), features(), input, split);
        assert_eq!(o.messages, [b"one\r\n".to_vec(), b"two\r\n".to_vec()]);
        assert_eq!(
            codes(&o),
            ["220", "250", "250", "250", "354", "250", "250", "250", "354", "250"]
        );
    }
}

#[test]
fn smuggling_never_ends_a_message_nor_starts_another() {
    let prefix = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nhello\r\n".to_vec();
    let smuggled = b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nforged\r\n.\r\n";
    for seq in [
        &b"\n.\n"[..],
        b"\n.\r\n",
        b"\r.\r",
        b"\r\n.\r\r\n",
        b".\n",
        b"\r\n.\n",
        b"x\r.\r\n",
    ] {
        let mut input = prefix.clone();
        input.extend_from_slice(seq);
        input.extend_from_slice(smuggled);
        for split in [1, 2, 3, input.len()] {
            let o = drive(plain_cfg(), features(), &input, split);
            let text = String::from_utf8_lossy(seq);
            assert!(o.messages.is_empty(), "{text:?} delivered {:?}", o.messages);
            assert!(
                !o.events.iter().any(|e| e.contains("evil")),
                "{text:?}: {:?}",
                o.events
            );
            assert!(
                o.replies.ends_with(
                    "521 5.5.2 Bare CR or LF in message content, closing connection\r\n"
                ),
                "{text:?}: {}",
                o.replies
            );
            assert!(o.closed);
            assert!(o.events.ends_with(&["ABORT".into(), "RESET".into()]));
        }
    }
}

#[test]
fn nul_in_content_is_not_an_end_and_refuses_the_message() {
    let input =
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\na\r\n.\x00\r\n\x00.\r\n.\r\n";
    for split in [1, 5, input.len()] {
        let o = drive(plain_cfg(), features(), input, split);
        // Content, not an end: one transaction, refused whole at its real end.
        assert!(o.messages.is_empty(), "split {split}");
        assert!(o
            .replies
            .ends_with("554 5.6.0 NUL octets are not allowed in message content\r\n"));
        assert_eq!(o.events.iter().filter(|e| *e == "ABORT").count(), 1);
    }
    // The same in a BDAT chunk; the session goes on serving.
    let o = drive(
        plain_cfg(),
        features(),
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 4 LAST\r\na\x00\r\nNOOP\r\n",
        3,
    );
    assert!(o.messages.is_empty());
    assert_eq!(codes(&o), ["220", "250", "250", "250", "554", "250"]);
}

#[test]
fn plaintext_pipelined_behind_starttls_is_discarded() {
    let cfg = SessionConfig {
        starttls: true,
        ..plain_cfg()
    };
    let input = b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n";
    let o = drive(cfg.clone(), features(), input, input.len());
    assert_eq!(o.events, ["STARTTLS"], "nothing behind STARTTLS may run");
    // After TLS the session starts over: MAIL needs a new EHLO; no second STARTTLS.
    let input = b"EHLO c\r\nSTARTTLS\r\n";
    let mut s = Session::new(cfg);
    s.feed(input);
    let mut saw_tls = false;
    while let Some(a) = s.next_action() {
        match a {
            Action::Ehlo => s.features(features()),
            Action::StartTls => {
                saw_tls = true;
                s.tls_established()
            }
            _ => {}
        }
    }
    assert!(saw_tls && s.is_tls());
    s.feed(b"MAIL FROM:<a@x>\r\nEHLO c\r\nSTARTTLS\r\n");
    let mut replies = String::new();
    while let Some(a) = s.next_action() {
        match a {
            Action::Send(r) => replies.push_str(&String::from_utf8_lossy(&r.to_bytes())),
            Action::Ehlo => s.features(features()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(replies.starts_with("503 5.5.1"), "{replies}");
    assert!(
        !replies.contains("STARTTLS"),
        "STARTTLS advertised after TLS: {replies}"
    );
    assert!(replies.contains("AUTH PLAIN LOGIN"), "{replies}");
    assert!(replies.ends_with("503 5.5.1 TLS already active or not available\r\n"));
}

#[test]
fn require_tls_refuses_mail_and_auth_before_starttls() {
    let cfg = SessionConfig {
        starttls: true,
        require_tls: true,
        ..plain_cfg()
    };
    let o = drive(
        cfg,
        features(),
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nAUTH PLAIN AGEAYg==\r\n",
        5,
    );
    assert_eq!(codes(&o), ["220", "250", "530", "530"], "{}", o.replies);
    assert!(o.events.is_empty());
    // Without require_tls, AUTH before TLS is still refused, with RFC 4954's code.
    let cfg = SessionConfig {
        starttls: true,
        ..plain_cfg()
    };
    let o = drive(cfg, features(), b"EHLO c\r\nAUTH PLAIN AGEAYg==\r\n", 5);
    assert!(o
        .replies
        .ends_with("538 5.7.11 Encryption required for requested authentication mechanism\r\n"));
    assert!(o.events.is_empty());
}

#[test]
fn auth_is_passed_through_after_tls_with_continuations() {
    let cfg = SessionConfig {
        implicit_tls: true,
        ..plain_cfg()
    };
    let input = b"EHLO c\r\nAUTH LOGIN\r\ndXNlcg==\r\nMAIL FROM:<a@x> AUTH=<>\r\n";
    let o = drive(cfg, features(), input, 3);
    assert_eq!(
        o.events,
        ["AUTH AUTH LOGIN", "AUTH dXNlcg==", "MAIL <a@x> AUTH=<>"]
    );
    assert_eq!(codes(&o), ["220", "250", "334", "235", "250"]);
    let secret = Secret::new(b"AUTH PLAIN c2VjcmV0".to_vec());
    assert!(!format!("{secret:?}").contains("c2Vj"));
}

#[test]
fn command_line_limit_at_minus_one_exact_and_plus_one() {
    // 512 octets including CRLF is the limit (RFC 5321 4.5.3.1.4).
    let noop = |len: usize| {
        let mut l = b"NOOP ".to_vec();
        l.resize(len - 2, b'x');
        l.extend_from_slice(b"\r\n");
        l
    };
    for (len, ok) in [(511, true), (512, true), (513, false), (100_000, false)] {
        let mut input = noop(len);
        input.extend_from_slice(b"NOOP\r\n");
        for split in [1, 100, input.len()] {
            let o = drive(plain_cfg(), features(), &input, split);
            let expected: &[&str] = if ok {
                &["220", "250", "250"]
            } else {
                &["220", "500", "250"]
            };
            assert_eq!(codes(&o), expected, "len {len} split {split}");
        }
    }
}

#[test]
fn message_size_limit_at_minus_one_exact_and_plus_one() {
    let cfg = SessionConfig {
        max_message_size: 100,
        ..plain_cfg()
    };
    for (size, ok) in [(99, true), (100, true), (101, false)] {
        let mut input = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n".to_vec();
        let mut content = vec![b'a'; size - 2];
        content.extend_from_slice(b"\r\n");
        input.extend_from_slice(&content);
        input.extend_from_slice(b".\r\nNOOP\r\n");
        let o = drive(cfg.clone(), features(), &input, 13);
        if ok {
            assert_eq!(o.messages, [content]);
        } else {
            assert!(o.messages.is_empty());
            assert!(o.replies.contains("552 5.3.4"), "{}", o.replies);
            assert!(o.replies.ends_with("250 2.0.0 OK\r\n"), "session goes on");
        }
        // SIZE= declared up front is checked against the same limit.
        let mail = format!("EHLO c\r\nMAIL FROM:<a@x> SIZE={size}\r\n");
        let o = drive(cfg.clone(), features(), mail.as_bytes(), 64);
        assert_eq!(
            codes(&o).last().map(String::as_str),
            Some(if ok { "250" } else { "552" })
        );
    }
}

#[test]
fn hostile_size_parameters() {
    for p in ["SIZE=-1", "SIZE=1e9", "SIZE=", "SIZE=100000000000000000000"] {
        let input = format!("EHLO c\r\nMAIL FROM:<a@x> {p}\r\n");
        let o = drive(plain_cfg(), features(), input.as_bytes(), 64);
        let last = codes(&o).pop().unwrap();
        let expected = if p.ends_with("000") { "552" } else { "5" };
        assert!(last.starts_with(expected), "{p}: {}", o.replies);
        assert!(o.events.is_empty());
    }
}

#[test]
fn recipient_limit_at_minus_one_exact_and_plus_one() {
    let cfg = SessionConfig {
        max_recipients: 3,
        ..plain_cfg()
    };
    let mut input = b"EHLO c\r\nMAIL FROM:<a@x>\r\n".to_vec();
    for i in 0..4 {
        input.extend_from_slice(format!("RCPT TO:<r{i}@y>\r\n").as_bytes());
    }
    let o = drive(cfg, features(), &input, input.len());
    assert_eq!(codes(&o), ["220", "250", "250", "250", "250", "250", "452"]);
    assert!(o.replies.ends_with("452 4.5.3 Too many recipients\r\n"));
}

#[test]
fn refused_recipients_do_not_count_and_data_needs_one() {
    let input = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<bad@y>\r\nDATA\r\n";
    let o = drive(plain_cfg(), features(), input, 4);
    assert_eq!(codes(&o), ["220", "250", "250", "550", "554"]);
}

#[test]
fn extensions_need_upstream_support_and_utf8_needs_smtputf8() {
    let none = UpstreamFeatures::default();
    let o = drive(
        plain_cfg(),
        none.clone(),
        b"EHLO c\r\nMAIL FROM:<a@x> RET=FULL\r\n",
        64,
    );
    assert!(o
        .replies
        .ends_with("555 5.5.4 Unsupported parameter RET\r\n"));
    let o = drive(
        plain_cfg(),
        none,
        b"EHLO c\r\nMAIL FROM:<a@x> SMTPUTF8\r\n",
        64,
    );
    assert!(o.replies.contains("555 5.5.4"));
    let o = drive(
        plain_cfg(),
        features(),
        "EHLO c\r\nMAIL FROM:<j\u{f6}rg@x>\r\n".as_bytes(),
        64,
    );
    assert!(
        o.replies.ends_with("553 5.6.7 Address needs SMTPUTF8\r\n"),
        "{}",
        o.replies
    );
    let input = "EHLO c\r\nMAIL FROM:<j\u{f6}rg@x> SMTPUTF8\r\nRCPT TO:<m\u{fc}ller@y>\r\n";
    let o = drive(plain_cfg(), features(), input.as_bytes(), 64);
    assert_eq!(o.events.len(), 2, "{}", o.replies);
    let o = drive(
        plain_cfg(),
        features(),
        b"HELO c\r\nMAIL FROM:<a@x> BODY=8BITMIME\r\n",
        64,
    );
    assert!(o.replies.contains("555"), "no ESMTP parameters after HELO");
}

#[test]
fn bdat_chunks_in_any_split() {
    let input = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 4\r\nab\r\nBDAT 4 LAST\r\ncd\r\nNOOP\r\n";
    for split in 1..input.len() {
        let o = drive(plain_cfg(), features(), input, split);
        assert_eq!(o.messages, [b"ab\r\ncd\r\n".to_vec()], "split {split}");
        assert_eq!(codes(&o), ["220", "250", "250", "250", "250", "250", "250"]);
    }
}

#[test]
fn bdat_with_bare_lf_or_without_transaction_or_too_big() {
    let o = drive(
        plain_cfg(),
        features(),
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 3 LAST\r\na\n.\r\n",
        2,
    );
    assert!(o.messages.is_empty());
    assert!(o.replies.contains("521 5.5.2") && o.closed);
    // Without a transaction the chunk is still consumed, so "QUIT" inside it is not a command.
    let o = drive(
        plain_cfg(),
        features(),
        b"EHLO c\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n",
        3,
    );
    assert_eq!(codes(&o), ["220", "250", "503", "250"]);
    let cfg = SessionConfig {
        max_message_size: 10,
        ..plain_cfg()
    };
    let o = drive(
        cfg,
        features(),
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 11 LAST\r\n",
        64,
    );
    assert!(o.replies.contains("552 5.3.4") && o.closed);
}

#[test]
fn long_text_lines_are_refused_at_end_of_data() {
    let cfg = SessionConfig {
        max_line_length: 10,
        ..plain_cfg()
    };
    for (len, ok) in [(9, true), (10, true), (11, false)] {
        let mut input = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', len));
        input.extend_from_slice(b"\r\n.\r\n");
        let o = drive(cfg.clone(), features(), &input, 5);
        assert_eq!(o.messages.len(), usize::from(ok), "{len}");
        if !ok {
            assert!(o
                .replies
                .ends_with("554 5.6.0 Line longer than 10 octets\r\n"));
        }
    }
}

#[test]
fn junk_flood_is_cut_off() {
    let input = b"JUNK\r\n".repeat(50);
    let o = drive(plain_cfg(), features(), &input, input.len());
    assert!(o
        .replies
        .ends_with("421 4.7.0 Too many errors, closing connection\r\n"));
    assert_eq!(codes(&o).len(), 1 + 20 + 1);
    assert!(o.closed);
}

#[test]
fn bare_lf_in_commands_and_order_errors() {
    let o = drive(
        plain_cfg(),
        features(),
        b"EHLO c\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n",
        64,
    );
    assert_eq!(codes(&o), ["220", "500", "503", "503", "503"]);
}

#[test]
fn timeout_in_data_aborts_the_message() {
    let mut s = Session::new(plain_cfg());
    s.feed(b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\npartial");
    let mut body = Vec::new();
    while let Some(a) = s.next_action() {
        match a {
            Action::Ehlo => s.features(features()),
            Action::Mail(_) | Action::Rcpt(_) => s.answer(Reply::new(250, "2.0.0", "OK")),
            Action::Body(b) => body.extend(b),
            _ => {}
        }
    }
    assert!(s.in_data());
    s.timed_out();
    let actions: Vec<String> = std::iter::from_fn(|| s.next_action())
        .map(|a| format!("{a:?}"))
        .collect();
    assert_eq!(actions[0], "MessageAbort");
    assert!(actions[1].contains("421"));
    assert_eq!(actions[2], "Close");
    assert!(s.is_closed());
}

#[test]
fn a_local_failure_mid_content_closes_and_drops_what_was_queued() {
    let mut s = Session::new(plain_cfg());
    s.feed(b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\npart one\r\n.\r\nRSET\r\nMAIL FROM:<smuggled@x>\r\n");
    let mut seen = Vec::new();
    while let Some(a) = s.next_action() {
        match a {
            Action::Ehlo => s.features(features()),
            Action::Mail(_) | Action::Rcpt(_) => s.answer(Reply::new(250, "2.0.0", "OK")),
            Action::Body(_) => {
                // The spool cannot take it: everything queued after this must go.
                s.fail_local(Reply::new(421, "4.3.0", "Local error"));
            }
            other => seen.push(format!("{other:?}")),
        }
    }
    assert!(!seen.iter().any(|a| a == "MessageEnd"), "{seen:?}");
    assert!(!seen.iter().any(|a| a.contains("smuggled")), "{seen:?}");
    assert!(seen.iter().any(|a| a.contains("421")), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("Close"));
    assert!(s.is_closed());
}

/// SECURITY.md I11: whatever ends a transaction whose BDAT content was partly received, that
/// content never reaches the next transaction.
#[test]
fn aborted_bdat_content_never_reaches_the_next_transaction() {
    let first = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<first@x>\r\nBDAT 5\r\nLEAK!";
    let second = b"MAIL FROM:<a@x>\r\nRCPT TO:<second@y>\r\nBDAT 6 LAST\r\nsecond";
    for end in ["RSET\r\n", "EHLO again\r\n", "HELO again\r\n"] {
        let mut input = first.to_vec();
        input.extend_from_slice(end.as_bytes());
        input.extend_from_slice(second);
        for split in [1, 7, input.len()] {
            let o = drive(plain_cfg(), features(), &input, split);
            assert_eq!(o.messages, [b"second".to_vec()], "{end:?} split {split}");
            let abort = o.events.iter().position(|e| e == "ABORT");
            let second_mail = o.events.iter().rposition(|e| e.starts_with("MAIL"));
            assert!(abort < second_mail, "{end:?}: {:?}", o.events);
        }
    }
    // A refused chunk (no valid recipient yet) is read and thrown away, never kept.
    let o = drive(
        plain_cfg(),
        features(),
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<bad@x>\r\nBDAT 5\r\nLEAK!RCPT TO:<b@y>\r\nBDAT 2 LAST\r\nok",
        3,
    );
    assert_eq!(o.messages, [b"ok".to_vec()]);
}

/// A BDAT line that does not parse leaves the chunk's end unknown: the connection is closed
/// rather than reading the chunk as commands.
#[test]
fn unparsable_bdat_closes_the_connection() {
    let long = format!("BDAT {}\r\n", "1".repeat(600));
    for bad in [
        "BDAT 10 LAST \r\n",
        "BDAT  10\r\n",
        "bdat x\r\n",
        "BDAT\r\n",
        &long,
    ] {
        let mut input = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n".to_vec();
        input.extend_from_slice(bad.as_bytes());
        input.extend_from_slice(b"MAIL FROM:<smuggled@x>\r\n");
        let o = drive(plain_cfg(), features(), &input, 4);
        assert!(o.closed, "{bad:?}: {}", o.replies);
        assert!(o.replies.contains("521 5.5.4"), "{bad:?}: {}", o.replies);
        assert!(
            !o.events.iter().any(|e| e.contains("smuggled")),
            "{bad:?}: {:?}",
            o.events
        );
        assert!(o.messages.is_empty());
    }
}

/// RFC 4954 section 5: only a client that authenticated through us may name a submitter.
#[test]
fn mail_auth_parameter_is_emptied_for_unauthenticated_clients() {
    let cfg = SessionConfig {
        implicit_tls: true,
        ..plain_cfg()
    };
    let o = drive(
        cfg.clone(),
        features(),
        b"EHLO c\r\nMAIL FROM:<a@x> AUTH=ceo@x.test SIZE=10\r\n",
        4,
    );
    assert_eq!(o.events, ["MAIL <a@x> AUTH=<> SIZE=10"]);
    // Authenticated through us: the client's value is passed on.
    let o = drive(
        cfg.clone(),
        features(),
        b"EHLO c\r\nAUTH PLAIN AGEAYg==\r\nMAIL FROM:<a@x> AUTH=a@x\r\n",
        4,
    );
    assert_eq!(
        o.events.last().map(String::as_str),
        Some("MAIL <a@x> AUTH=a@x")
    );
    // Not xtext: refused, never passed on.
    let o = drive(
        cfg,
        features(),
        b"EHLO c\r\nMAIL FROM:<a@x> AUTH=a=b\r\n",
        4,
    );
    assert!(
        o.events.is_empty() && o.replies.contains(" 5.5.4 "),
        "{o:?}"
    );
}

/// SECURITY.md I9: commands that make no progress are bounded (limit-1, limit, limit+1), and
/// a delivered message starts the count again.
#[test]
fn commands_without_progress_are_bounded() {
    let cfg = SessionConfig {
        max_junk_commands: 5,
        ..plain_cfg()
    };
    for (n, closed) in [(4, false), (5, false), (6, true)] {
        let mut input = b"EHLO c\r\n".to_vec();
        for i in 0..n {
            let junk: &[u8] = match i % 5 {
                0 => b"NOOP\r\n",
                1 => b"RSET\r\n",
                2 => b"VRFY x\r\n",
                3 => b"HELP\r\n",
                _ => b"EHLO again\r\n",
            };
            input.extend_from_slice(junk);
        }
        let o = drive(cfg.clone(), features(), &input, 7);
        assert_eq!(o.closed, closed, "{n}: {}", o.replies);
        if closed {
            assert!(o
                .replies
                .ends_with("421 4.7.0 Too many commands without progress, closing connection\r\n"));
        }
    }
    // A delivered message resets the count; BDAT 0 counts.
    let mut input = b"EHLO c\r\n".to_vec();
    input.extend_from_slice(&b"NOOP\r\n".repeat(4));
    input.extend_from_slice(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 0\r\nBDAT 2 LAST\r\nok");
    input.extend_from_slice(&b"NOOP\r\n".repeat(5));
    let o = drive(cfg.clone(), features(), &input, 9);
    assert!(!o.closed, "{}", o.replies);
    assert_eq!(o.messages, [b"ok".to_vec()]);
    input.extend_from_slice(b"NOOP\r\n");
    assert!(drive(cfg, features(), &input, 9).closed, "BDAT 0 counted");
}

/// RFC 2920 3.1: DATA ends a pipelined group; content may only follow the 354. Content sent
/// behind a DATA that is refused would be read as commands (a message body holding "MAIL FROM",
/// "RCPT TO", "DATA" would become a transaction of its own): the connection is closed instead.
/// Found by smtpsmug's "pipelining" test.
#[test]
fn content_pipelined_behind_a_refused_data_is_never_read_as_commands() {
    let smuggled = b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nforged\r\n.\r\n";
    for refused in [
        &b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<bad@y>\r\nDATA\r\n"[..],
        b"EHLO c\r\nDATA\r\n",
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 2\r\nabDATA\r\n",
    ] {
        let mut input = refused.to_vec();
        input.extend_from_slice(b"Subject: hello\r\n\r\n");
        input.extend_from_slice(smuggled);
        let o = drive(plain_cfg(), features(), &input, input.len());
        let text = String::from_utf8_lossy(refused);
        assert!(
            !o.events.iter().any(|e| e.contains("evil")),
            "{text:?}: {:?}",
            o.events
        );
        assert!(o.messages.is_empty(), "{text:?}");
        assert!(o.closed, "{text:?}: {}", o.replies);
        assert!(
            o.replies.ends_with(", closing connection\r\n"),
            "{text:?}: {}",
            o.replies
        );
    }
    // A refused DATA with nothing behind it leaves the session serving.
    let o = drive(
        plain_cfg(),
        features(),
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<bad@y>\r\nDATA\r\n",
        64,
    );
    assert!(!o.closed);
    assert!(o.replies.ends_with("554 5.5.1 No valid recipients\r\n"));
}

/// RFC 3463 enhanced codes exist for classes 2, 4 and 5 only, and match the reply's class: the
/// 354 to DATA carries none (it carried "2.0.0"; found by the session fuzz target).
#[test]
fn enhanced_codes_match_the_reply_class() {
    let o = drive(plain_cfg(), features(), SIMPLE, SIMPLE.len());
    assert!(
        o.replies
            .contains("\r\n354 End data with <CR><LF>.<CR><LF>\r\n"),
        "{}",
        o.replies
    );
    for line in o.replies.lines() {
        let class = &line[..1];
        if let Some(status) = line.get(4..).and_then(|t| t.split(' ').next()) {
            if crate::smtp::EnhancedCode::parse(status).is_some() {
                assert!(status.starts_with(class), "{line}");
            }
        }
    }
}

#[test]
fn the_tail_of_an_overlong_line_is_never_read_as_a_bdat_command() {
    // Found by the session fuzzer: with the line cut at the limit, the rest of the same line
    // could start with "BDAT" in one split of the reads and be refused as a malformed BDAT
    // (521, connection closed), while read at once it is one overlong line (500). The outcome
    // must not depend on how the bytes arrive: the tail of an overlong line is not a command.
    let cfg = SessionConfig {
        max_command_line: 64,
        ..plain_cfg()
    };
    let mut input = b"EHLO c.test\r\n".to_vec();
    input.extend_from_slice(&[b'x'; 64]);
    input.extend_from_slice(b"BDAT 10 LAST");
    input.extend_from_slice(&[b'y'; 60]);
    input.extend_from_slice(b"\r\nNOOP\r\n");
    let whole = drive(cfg.clone(), features(), &input, input.len());
    assert_eq!(codes(&whole), ["220", "250", "500", "250"]);
    assert!(!whole.closed);
    for split in 1..=80 {
        assert_eq!(
            drive(cfg.clone(), features(), &input, split),
            whole,
            "split {split}"
        );
    }
}
