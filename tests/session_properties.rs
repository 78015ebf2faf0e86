//! Properties of the inbound session on arbitrary client input (SECURITY.md I1, I11), checked
//! with proptest through the public sans-IO API, as the relay drives it.
//!
//! Whatever the client sends (valid transactions by DATA and BDAT, smuggling sequences, NUL
//! around dots, RSET/EHLO/HELO in the middle of a transaction, random bytes, all split into
//! reads of random sizes), for every message the session hands over for relaying:
//! - its content has only CRLF line ends and no NUL, so the dot-stuffed form an upstream gets
//!   ends exactly once, at its end, even for an upstream that takes a bare CR or LF as a line end;
//! - it holds content of its own transaction only (each transaction's content carries a unique
//!   token; a smuggled transaction's MAIL never reaches the upstream);
//! - content is only handed over between an accepted MAIL and its end or abort.
//!
//! And a client that sends only well-formed transactions gets each delivered exactly once, whole.

use proptest::prelude::*;
use sealgate::smtp::data::{DataReceiver, DotStuffer};
use sealgate::smtp::{Action, Reply, Session, SessionConfig, UpstreamFeatures};

/// One transaction as an upstream would receive it.
#[derive(Debug, Clone, PartialEq)]
struct Delivered {
    sender: String,
    recipients: Vec<String>,
    content: Vec<u8>,
}

#[derive(Debug, Default)]
struct Outcome {
    delivered: Vec<Delivered>,
    mails: Vec<String>,
    replies: String,
}

fn features() -> UpstreamFeatures {
    UpstreamFeatures {
        size: None,
        eightbitmime: true,
        smtputf8: true,
        dsn: true,
        auth: Vec::new(),
    }
}

fn crlf_only(content: &[u8]) -> bool {
    content.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => content.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && content[i - 1] == b'\r',
        _ => true,
    })
}

/// Feeds `input` in reads of the given sizes (cycled) to a session driven like the relay:
/// an upstream that accepts everything, and a spool that only `MessageEnd` (relayed) and
/// `MessageAbort` (dropped) empty, so content the session forgets to drop would show up in the
/// next message. Panics on any action outside its place.
fn drive(input: &[u8], reads: &[usize]) -> Outcome {
    let mut s = Session::new(SessionConfig {
        hostname: "gw.test".into(),
        max_errors: 1000,
        ..SessionConfig::default()
    });
    let mut o = Outcome::default();
    let mut open: Option<Delivered> = None;
    let mut spool: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut read = 0;
    loop {
        while let Some(action) = s.next_action() {
            match action {
                Action::Send(r) => o.replies.push_str(&String::from_utf8_lossy(&r.to_bytes())),
                Action::Ehlo => s.features(features()),
                Action::Mail(p) => {
                    assert!(open.is_none(), "MAIL inside an open transaction");
                    o.mails.push(p.address.clone());
                    open = Some(Delivered {
                        sender: p.address.clone(),
                        recipients: Vec::new(),
                        content: Vec::new(),
                    });
                    s.answer(Reply::new(250, "2.1.0", "OK"));
                }
                Action::Rcpt(p) => {
                    let tx = open.as_mut().expect("RCPT outside a transaction");
                    tx.recipients.push(p.address.clone());
                    s.answer(Reply::new(250, "2.1.5", "OK"));
                }
                Action::Body(b) => {
                    assert!(open.is_some(), "content outside a transaction");
                    spool.extend_from_slice(&b);
                }
                Action::MessageEnd => {
                    let mut tx = open.take().expect("end of data outside a transaction");
                    tx.content = std::mem::take(&mut spool);
                    o.delivered.push(tx);
                    s.answer(Reply::new(250, "2.0.0", "queued"));
                }
                Action::MessageAbort => {
                    spool.clear();
                    open = None;
                }
                // Resets the upstream transaction; the spool is the session's to drop.
                Action::Reset => open = None,
                Action::Auth(_) => s.answer(Reply::new(535, "5.7.8", "no")),
                Action::StartTls => s.tls_established(),
                Action::Close => return o,
            }
        }
        if pos >= input.len() {
            return o;
        }
        let n = reads[read % reads.len()].max(1).min(input.len() - pos);
        read += 1;
        s.feed(&input[pos..pos + n]);
        pos += n;
    }
}

/// How a well-formed transaction sends its content.
#[derive(Debug, Clone)]
enum Via {
    Data,
    /// BDAT with the content cut at these points (the last chunk has LAST).
    Bdat(Vec<usize>),
}

/// A command that ends (or does not touch) the transaction in progress.
#[derive(Debug, Clone, Copy)]
enum Interrupt {
    Rset,
    Ehlo,
    Helo,
    Noop,
}

impl Interrupt {
    fn line(self) -> &'static [u8] {
        match self {
            Interrupt::Rset => b"RSET\r\n",
            Interrupt::Ehlo => b"EHLO again.test\r\n",
            Interrupt::Helo => b"HELO again.test\r\n",
            Interrupt::Noop => b"NOOP\r\n",
        }
    }
}

#[derive(Debug, Clone)]
enum Segment {
    /// A transaction whose content lines each carry its token; `interrupt` is sent after the
    /// first BDAT chunk (or before DATA).
    Transaction {
        lines: Vec<String>,
        via: Via,
        interrupt: Option<Interrupt>,
    },
    /// A transaction whose content holds a smuggling sequence followed by a whole second
    /// transaction from another sender.
    Smuggle { sequence: &'static [u8] },
    /// Whatever bytes.
    Junk(Vec<u8>),
    /// A command between transactions.
    Command(Interrupt),
}

const SMUGGLING: &[&[u8]] = &[
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r",
    b"\r.\r\n",
    b"\r\n.\r\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n.\x00\n",
    b"\r\n\x00.\x00\r\n",
    b"\n..\n",
];

/// Tokens of smuggled transactions are numbered from here.
const EVIL: usize = 5000;

/// The transaction number a sender's content must carry.
fn owner(sender: &str) -> Option<usize> {
    let at = sender.strip_suffix("@x.test")?;
    match at.strip_prefix("evil") {
        Some(n) => n.parse::<usize>().ok().map(|n| n + EVIL),
        None => at.strip_prefix('s')?.parse().ok(),
    }
}

fn token(i: usize) -> String {
    format!("TOKEN{i:04}X")
}

fn sender(i: usize) -> String {
    format!("s{i}@x.test")
}

/// The content lines of transaction `i` (without CRLF), as the message should arrive.
fn content_of(i: usize, lines: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(format!("{}{l}", token(i)).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Content lines start with a dot now and then, so stuffing matters.
fn line_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        Just(String::new()),
        "\\.[ -~]{0,10}".prop_map(|s| format!("\r\n{s}")),
        Just("\r\n.".to_string()),
        Just("\r\n..".to_string()),
    ]
}

fn segment_strategy(hostile: bool) -> BoxedStrategy<Segment> {
    let interrupt = prop_oneof![
        Just(Interrupt::Rset),
        Just(Interrupt::Ehlo),
        Just(Interrupt::Helo),
        Just(Interrupt::Noop),
    ];
    let via = prop_oneof![
        Just(Via::Data),
        prop::collection::vec(0usize..200, 0..4).prop_map(Via::Bdat),
    ];
    let maybe_interrupt = if hostile {
        prop::option::weighted(0.4, interrupt.clone()).boxed()
    } else {
        Just(None).boxed()
    };
    let tx = (
        prop::collection::vec(line_strategy(), 1..6),
        via,
        maybe_interrupt,
    )
        .prop_map(|(lines, via, interrupt)| Segment::Transaction {
            lines,
            via,
            interrupt,
        });
    let command = interrupt.prop_map(Segment::Command);
    if !hostile {
        return prop_oneof![4 => tx, 1 => command].boxed();
    }
    prop_oneof![
        4 => tx,
        1 => command,
        2 => prop::sample::select(SMUGGLING).prop_map(|sequence| Segment::Smuggle { sequence }),
        1 => prop::collection::vec(any::<u8>(), 0..48).prop_map(Segment::Junk),
        1 => prop::collection::vec(
            prop::sample::select(&b"\r\n.\x00 DATABDAT0LASTRSETMAIL:<>"[..]),
            0..24,
        )
        .prop_map(Segment::Junk),
    ]
    .boxed()
}

/// The client's bytes, and what each transaction `i` should deliver when nothing disturbs it.
fn render(segments: &[Segment]) -> (Vec<u8>, Vec<Delivered>) {
    let mut wire = b"EHLO client.test\r\n".to_vec();
    let mut expected = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        match seg {
            Segment::Transaction {
                lines,
                via,
                interrupt,
            } => {
                let content = content_of(i, lines);
                wire.extend_from_slice(
                    format!("MAIL FROM:<{}>\r\nRCPT TO:<r{i}@y.test>\r\n", sender(i)).as_bytes(),
                );
                match via {
                    Via::Data => {
                        if let Some(int) = interrupt {
                            wire.extend_from_slice(int.line());
                        }
                        wire.extend_from_slice(b"DATA\r\n");
                        let mut stuffed = Vec::new();
                        let mut s = DotStuffer::default();
                        s.stuff(&content, &mut stuffed);
                        s.finish(&mut stuffed);
                        wire.extend_from_slice(&stuffed);
                    }
                    Via::Bdat(cuts) => {
                        let mut cuts: Vec<usize> =
                            cuts.iter().map(|c| c % (content.len() + 1)).collect();
                        cuts.sort_unstable();
                        cuts.push(content.len());
                        let mut start = 0;
                        for (n, &end) in cuts.iter().enumerate() {
                            let last = n + 1 == cuts.len();
                            let chunk = &content[start..end];
                            let verb = if last { " LAST" } else { "" };
                            wire.extend_from_slice(
                                format!("BDAT {}{verb}\r\n", chunk.len()).as_bytes(),
                            );
                            wire.extend_from_slice(chunk);
                            if n == 0 {
                                if let Some(int) = interrupt {
                                    wire.extend_from_slice(int.line());
                                }
                            }
                            start = end;
                        }
                    }
                }
                if matches!(interrupt, None | Some(Interrupt::Noop)) {
                    expected.push(Delivered {
                        sender: sender(i),
                        recipients: vec![format!("r{i}@y.test")],
                        content,
                    });
                }
            }
            Segment::Smuggle { sequence } => {
                wire.extend_from_slice(
                    format!(
                        "MAIL FROM:<{}>\r\nRCPT TO:<r{i}@y.test>\r\nDATA\r\n{} hello",
                        sender(i),
                        token(i)
                    )
                    .as_bytes(),
                );
                wire.extend_from_slice(sequence);
                wire.extend_from_slice(
                    format!(
                        "MAIL FROM:<evil{i}@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\n{}\r\n.\r\n",
                        token(EVIL + i)
                    )
                    .as_bytes(),
                );
            }
            Segment::Junk(bytes) => wire.extend_from_slice(bytes),
            Segment::Command(int) => wire.extend_from_slice(int.line()),
        }
    }
    (wire, expected)
}

/// What an upstream reads from one relayed message: the wire form after dot-stuffing must end
/// exactly once, at its end, for a strict reader and for one that takes any CR or LF as a line
/// end, and read back to the same content.
fn check_upstream_view(content: &[u8]) {
    assert!(crlf_only(content), "bare CR/LF relayed: {content:?}");
    assert!(!content.contains(&0), "NUL relayed: {content:?}");
    let mut wire = Vec::new();
    let mut s = DotStuffer::default();
    s.stuff(content, &mut wire);
    s.finish(&mut wire);
    let mut back = Vec::new();
    let fed = DataReceiver::new()
        .feed(&wire, &mut back)
        .expect("our own wire form is valid");
    assert!(
        fed.done && fed.consumed == wire.len(),
        "strict upstream: early end"
    );
    let mut expected = content.to_vec();
    if !expected.is_empty() && !expected.ends_with(b"\r\n") {
        expected.extend_from_slice(b"\r\n");
    }
    assert_eq!(back, expected);
    let lenient_ends = wire
        .split(|&b| b == b'\r' || b == b'\n')
        .filter(|line| *line == b".")
        .count();
    assert_eq!(lenient_ends, 1, "a lenient upstream would see another end");
}

/// Which transaction a token in `content` belongs to, for every token found.
fn tokens_in(content: &[u8]) -> Vec<usize> {
    let text = String::from_utf8_lossy(content);
    text.match_indices("TOKEN")
        .filter_map(|(at, _)| text.get(at + 5..at + 9)?.parse().ok())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Hostile and valid input mixed, in reads of any size: every relayed message is clean and
    /// holds only its own transaction's content; no smuggled transaction starts.
    #[test]
    fn relayed_content_is_clean_and_isolated(
        segments in prop::collection::vec(segment_strategy(true), 1..8),
        reads in prop::collection::vec(1usize..80, 1..6),
    ) {
        let (wire, _) = render(&segments);
        let o = drive(&wire, &reads);
        // A smuggled MAIL may only run when the transaction carrying it never opened (junk in
        // front of it spoiled its MAIL): then the client really sent it as a command.
        for m in &o.mails {
            if let Some(i) = m.strip_prefix("evil").and_then(|m| m.strip_suffix("@x.test")) {
                prop_assert!(
                    !o.mails.contains(&format!("s{i}@x.test")),
                    "smuggled MAIL reached the upstream: {:?}", o.mails
                );
            }
        }
        for d in &o.delivered {
            check_upstream_view(&d.content);
            let own = owner(&d.sender);
            for t in tokens_in(&d.content) {
                prop_assert_eq!(Some(t), own, "content of another transaction in {:?}", d);
            }
        }
    }

    /// Only well-formed transactions (DATA or BDAT, commands between them): each is delivered
    /// exactly once, whole, in order, however the bytes are split.
    #[test]
    fn well_formed_transactions_are_each_delivered_once(
        segments in prop::collection::vec(segment_strategy(false), 1..8),
        reads in prop::collection::vec(1usize..80, 1..6),
    ) {
        let (wire, expected) = render(&segments);
        let o = drive(&wire, &reads);
        prop_assert_eq!(&o.delivered, &expected, "replies: {}", o.replies);
        for d in &o.delivered {
            check_upstream_view(&d.content);
        }
    }

    /// A transaction ended by RSET, EHLO or HELO after part of its BDAT content never lends that
    /// content to the next one, and the next one is delivered whole.
    #[test]
    fn interrupted_bdat_content_never_reaches_the_next_message(
        first in prop::collection::vec(line_strategy(), 1..4),
        second in prop::collection::vec(line_strategy(), 1..4),
        cut in 0usize..100,
        int in prop_oneof![Just(Interrupt::Rset), Just(Interrupt::Ehlo), Just(Interrupt::Helo)],
        reads in prop::collection::vec(1usize..40, 1..4),
    ) {
        let segments = [
            Segment::Transaction { lines: first, via: Via::Bdat(vec![cut]), interrupt: Some(int) },
            Segment::Transaction { lines: second, via: Via::Data, interrupt: None },
        ];
        let (wire, expected) = render(&segments);
        let o = drive(&wire, &reads);
        prop_assert_eq!(&o.delivered, &expected, "replies: {}", o.replies);
    }
}
