//! The inbound SMTP server session as a sans-IO state machine.
//!
//! The driver feeds it the bytes read from the client (`feed`) and takes `Action`s out of it
//! (`next_action`) until it returns `None`: then it flushes the replies and reads more. Some
//! actions ask the driver a question (EHLO needs the upstream's features; MAIL, RCPT, end of
//! message and AUTH need the upstream's verdict): the session then waits, processing nothing,
//! until the driver answers with `features` or `answer`. Pipelined commands stay buffered and are
//! handled in order, so replies always go out in command order (RFC 2920).

use std::collections::VecDeque;
use std::fmt;

use zeroize::Zeroizing;

use super::command::{self, Command, PathWithParams};
use super::data::{BdatChecker, DataReceiver};
use super::reply::Reply;

/// Limits and switches of one listener.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub hostname: String,
    /// Longest command line, CRLF included (RFC 5321: 512).
    pub max_command_line: usize,
    pub max_message_size: u64,
    pub max_recipients: usize,
    /// Longest text line in the content, CRLF excluded.
    pub max_line_length: usize,
    /// STARTTLS may be offered (a "starttls" listener that is not yet secured).
    pub starttls: bool,
    /// The connection is already under TLS (implicit TLS listener).
    pub implicit_tls: bool,
    /// MAIL and AUTH need TLS first.
    pub require_tls: bool,
    /// Protocol errors tolerated before the session is closed.
    pub max_errors: usize,
    /// Commands that make no progress (NOOP, RSET, VRFY, HELP, BDAT 0, EHLO/HELO again)
    /// tolerated between two messages before the session is closed.
    pub max_junk_commands: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            hostname: "localhost".into(),
            max_command_line: 512,
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: 128 * 1024,
            starttls: false,
            implicit_tls: false,
            require_tls: false,
            max_errors: 20,
            max_junk_commands: 100,
        }
    }
}

/// What the upstream offers that the client may use through us.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamFeatures {
    /// The upstream's SIZE limit, if it announced one (0 = no limit).
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    /// AUTH mechanisms we pass through (subset of PLAIN and LOGIN).
    pub auth: Vec<String>,
}

/// Bytes that must never be logged (AUTH exchanges).
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Action {
    /// Write this reply to the client.
    Send(Reply),
    /// The 220 to STARTTLS is queued: flush it, then run the TLS handshake and call
    /// `tls_established`. Bytes the client sent behind STARTTLS were discarded.
    StartTls,
    /// EHLO or HELO (see [`Session::helo`]): answer with `features` (the upstream's, or
    /// defaults when it is unavailable). The upstream session opens here, when the client's
    /// name is known.
    Ehlo,
    /// Open an upstream transaction; answer with the upstream's reply.
    Mail(PathWithParams),
    /// Add a recipient; answer with the upstream's reply.
    Rcpt(PathWithParams),
    /// A piece of the message content (unstuffed, CRLF line ends).
    Body(Vec<u8>),
    /// The message is complete: relay it and answer with the upstream's final reply.
    MessageEnd,
    /// Drop the content received so far for this transaction.
    MessageAbort,
    /// The client's transaction was reset: reset the upstream one too (no answer needed).
    Reset,
    /// An AUTH command or continuation line to pass through; answer with the upstream's reply.
    Auth(Secret),
    /// Close the connection after flushing.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Features,
    Mail,
    Rcpt,
    MessageEnd,
    Auth,
    Tls,
}

#[derive(Debug)]
enum Phase {
    Command,
    Data(DataReceiver),
    Bdat { remaining: u64, last: bool },
    BdatDiscard { remaining: u64 },
    AuthContinue,
    Closed,
}

#[derive(Debug)]
struct Transaction {
    recipients: usize,
    smtputf8: bool,
    size: u64,
    oversize: bool,
    /// The content holds a NUL octet: refused at its end (we offer no BINARYMIME).
    nul: bool,
    /// Content arrives by BDAT (and not DATA) in this transaction.
    bdat: Option<BdatChecker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Greeted {
    No,
    Helo,
    Ehlo,
}

/// One client session. See the module documentation.
pub struct Session {
    cfg: SessionConfig,
    input: Vec<u8>,
    actions: VecDeque<Action>,
    pending: Option<Pending>,
    phase: Phase,
    tls: bool,
    greeted: Greeted,
    /// The name in the last EHLO or HELO.
    helo: Option<String>,
    features: UpstreamFeatures,
    authenticated: bool,
    mail_accepted: bool,
    /// The MAIL command waiting for its verdict asked for SMTPUTF8.
    mail_utf8: bool,
    tx: Option<Transaction>,
    discarding_long_line: bool,
    errors: usize,
    /// Commands without progress since the last message (see `max_junk_commands`).
    junk: usize,
    discarded_after_starttls: usize,
    lines: u64,
}

/// Longest AUTH continuation line (RFC 4954 section 4).
const MAX_AUTH_LINE: usize = 12288;

impl Session {
    pub fn new(cfg: SessionConfig) -> Self {
        let greeting = Reply::plain(220, vec![format!("{} ESMTP sealgate", cfg.hostname)]);
        let tls = cfg.implicit_tls;
        let mut actions = VecDeque::new();
        actions.push_back(Action::Send(greeting));
        Session {
            cfg,
            input: Vec::new(),
            actions,
            pending: None,
            phase: Phase::Command,
            tls,
            greeted: Greeted::No,
            helo: None,
            features: UpstreamFeatures::default(),
            authenticated: false,
            mail_accepted: false,
            mail_utf8: false,
            tx: None,
            discarding_long_line: false,
            errors: 0,
            junk: 0,
            discarded_after_starttls: 0,
            lines: 0,
        }
    }

    /// Adds bytes read from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !matches!(self.phase, Phase::Closed) {
            self.input.extend_from_slice(bytes);
        }
    }

    /// True while message content (DATA or BDAT) is being received: the driver uses the data
    /// timeout instead of the command timeout.
    pub fn in_data(&self) -> bool {
        matches!(
            self.phase,
            Phase::Data(_) | Phase::Bdat { .. } | Phase::BdatDiscard { .. }
        )
    }

    /// True from an accepted MAIL until the transaction ends (message answered, RSET, ...).
    pub fn in_transaction(&self) -> bool {
        self.mail_accepted
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed) && self.actions.is_empty()
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The name the client gave in its last EHLO or HELO, and whether it was EHLO.
    pub fn helo(&self) -> Option<(&str, bool)> {
        self.helo
            .as_deref()
            .map(|h| (h, self.greeted != Greeted::Helo))
    }

    /// How many plaintext bytes pipelined behind STARTTLS were thrown away (I2).
    pub fn discarded_after_starttls(&self) -> usize {
        self.discarded_after_starttls
    }

    /// Complete command lines taken so far (the driver measures command timeouts with it).
    pub fn lines_taken(&self) -> u64 {
        self.lines
    }

    /// Bytes buffered but not yet processed.
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    /// The next thing to do, or `None` when the session needs more input or an answer.
    pub fn next_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() && self.pending.is_none() {
            self.process();
        }
        self.actions.pop_front()
    }

    /// Answers `Action::Ehlo`.
    pub fn features(&mut self, features: UpstreamFeatures) {
        if self.pending != Some(Pending::Features) {
            return;
        }
        self.pending = None;
        if self.greeted == Greeted::Helo {
            self.features = UpstreamFeatures::default();
            return self.send(Reply::plain(250, vec![self.cfg.hostname.clone()]));
        }
        self.features = features;
        let mut lines = vec![
            self.cfg.hostname.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", self.max_size()),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
        ];
        if self.cfg.starttls && !self.tls {
            lines.push("STARTTLS".into());
        }
        if self.features.smtputf8 {
            lines.push("SMTPUTF8".into());
        }
        if self.features.dsn {
            lines.push("DSN".into());
        }
        if self.auth_offered() {
            lines.push(format!("AUTH {}", self.features.auth.join(" ")));
        }
        self.send(Reply::plain(250, lines));
    }

    /// Answers `Mail`, `Rcpt`, `MessageEnd` and `Auth` with the upstream's reply.
    pub fn answer(&mut self, reply: Reply) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        match pending {
            Pending::Mail => {
                if reply.is_positive() {
                    self.mail_accepted = true;
                    self.tx = Some(Transaction {
                        recipients: 0,
                        smtputf8: self.mail_utf8,
                        size: 0,
                        oversize: false,
                        nul: false,
                        bdat: None,
                    });
                }
            }
            Pending::Rcpt => {
                if let (true, Some(tx)) = (reply.is_positive(), self.tx.as_mut()) {
                    tx.recipients += 1;
                }
            }
            Pending::MessageEnd => {
                if reply.is_positive() {
                    self.junk = 0;
                }
                self.tx = None;
                self.mail_accepted = false;
                self.phase = Phase::Command;
            }
            Pending::Auth => {
                if reply.is_intermediate() && reply.code() == 334 {
                    self.phase = Phase::AuthContinue;
                } else {
                    self.phase = Phase::Command;
                    if reply.is_positive() {
                        self.authenticated = true;
                    }
                }
            }
            Pending::Features | Pending::Tls => {
                self.pending = Some(pending);
                return;
            }
        }
        self.send(reply);
    }

    /// The TLS handshake after STARTTLS succeeded: the session starts over (RFC 3207 4.2).
    pub fn tls_established(&mut self) {
        if self.pending == Some(Pending::Tls) {
            self.pending = None;
        }
        self.tls = true;
        self.greeted = Greeted::No;
        self.features = UpstreamFeatures::default();
        self.tx = None;
        self.mail_accepted = false;
        self.input.clear();
    }

    /// The client was silent for too long.
    pub fn timed_out(&mut self) {
        self.cut(Reply::new(421, "4.4.2", "Timeout, closing connection"));
    }

    /// The client sent message content slower than the listener's minimum data rate.
    pub fn too_slow(&mut self) {
        self.cut(Reply::new(
            421,
            "4.4.2",
            "Data rate too low, closing connection",
        ));
    }

    /// The server is shutting down (RFC 3463 4.3.2: system not accepting network messages).
    pub fn shutting_down(&mut self) {
        self.cut(Reply::new(421, "4.3.2", "Service shutting down"));
    }

    fn cut(&mut self, reply: Reply) {
        if self.in_data() {
            self.actions.push_back(Action::MessageAbort);
        }
        self.close_with(reply);
    }

    /// The driver hit a local fault it cannot recover from mid-stream (e.g. the spool cannot be
    /// written): whatever was queued for the message is dropped, the message is aborted and the
    /// connection closed. Closing (rather than going back to commands) guarantees that the rest
    /// of the content the client is still sending is never read as commands.
    pub fn fail_local(&mut self, reply: Reply) {
        self.actions.retain(|a| matches!(a, Action::Send(_)));
        if self.mail_accepted {
            self.actions.push_back(Action::MessageAbort);
            self.actions.push_back(Action::Reset);
        }
        self.tx = None;
        self.mail_accepted = false;
        self.close_with(reply);
    }

    fn max_size(&self) -> u64 {
        match self.features.size {
            Some(n) if n > 0 => n.min(self.cfg.max_message_size),
            _ => self.cfg.max_message_size,
        }
    }

    fn auth_offered(&self) -> bool {
        self.tls && !self.authenticated && !self.features.auth.is_empty()
    }

    fn send(&mut self, reply: Reply) {
        self.actions.push_back(Action::Send(reply));
    }

    /// SECURITY.md I1: a bare CR or LF in content is never a line end; the message is dropped
    /// and the connection closed, so nothing after it can be taken for a command.
    fn refuse_bare_line_ending(&mut self) {
        self.actions.push_back(Action::MessageAbort);
        self.actions.push_back(Action::Reset);
        self.close_with(Reply::new(
            521,
            "5.5.2",
            "Bare CR or LF in message content, closing connection",
        ));
    }

    fn close_with(&mut self, reply: Reply) {
        self.send(reply);
        self.actions.push_back(Action::Close);
        self.phase = Phase::Closed;
        self.pending = None;
        self.input.clear();
    }

    fn error(&mut self, reply: Reply) {
        self.errors += 1;
        if self.errors > self.cfg.max_errors {
            self.close_with(Reply::new(
                421,
                "4.7.0",
                "Too many errors, closing connection",
            ));
        } else {
            self.send(reply);
        }
    }

    fn ask(&mut self, pending: Pending, action: Action) {
        self.pending = Some(pending);
        self.actions.push_back(action);
    }

    /// Works through buffered input until an action is produced or more input is needed.
    fn process(&mut self) {
        while self.actions.is_empty() && self.pending.is_none() {
            let progressed = match self.phase {
                Phase::Closed => return,
                Phase::Command | Phase::AuthContinue => self.process_line(),
                Phase::Data(_) => self.process_data(),
                Phase::Bdat { .. } | Phase::BdatDiscard { .. } => self.process_bdat(),
            };
            if !progressed {
                return;
            }
        }
    }

    /// Takes one line from the input. Returns false when a full line is not there yet.
    fn process_line(&mut self) -> bool {
        let limit = if matches!(self.phase, Phase::AuthContinue) {
            MAX_AUTH_LINE
        } else {
            self.cfg.max_command_line
        };
        let Some(lf) = self.input.iter().position(|&b| b == b'\n') else {
            if self.input.len() >= limit {
                // Only at the start of a line: the tail of an overlong line being discarded
                // is not a command, however the reads cut it.
                let at_line_start = !self.discarding_long_line;
                if at_line_start
                    && is_bdat(&self.input)
                    && !matches!(self.phase, Phase::AuthContinue)
                {
                    self.refuse_malformed_bdat();
                    return true;
                }
                // Too long already: drop what we have and the rest of the line when it comes.
                self.input.clear();
                if !self.discarding_long_line {
                    self.discarding_long_line = true;
                    self.error(Reply::new(500, "5.5.2", "Line too long"));
                }
                return !self.actions.is_empty();
            }
            return false;
        };
        let raw: Vec<u8> = self.input.drain(..=lf).collect();
        self.lines += 1;
        if std::mem::take(&mut self.discarding_long_line) {
            return true;
        }
        if raw.len() > limit {
            if is_bdat(&raw) && !matches!(self.phase, Phase::AuthContinue) {
                self.refuse_malformed_bdat();
            } else {
                self.error(Reply::new(500, "5.5.2", "Line too long"));
            }
            return true;
        }
        let Some(line) = raw.strip_suffix(b"\r\n") else {
            self.error(Reply::new(500, "5.5.2", "Bare LF in command line"));
            return true;
        };
        if line.contains(&b'\r') {
            self.error(Reply::new(500, "5.5.2", "Bare CR in command line"));
            return true;
        }
        if matches!(self.phase, Phase::AuthContinue) {
            self.ask(Pending::Auth, Action::Auth(Secret::new(line.to_vec())));
            return true;
        }
        match command::parse(line) {
            Ok(cmd) => self.command(cmd, line),
            Err(_) if is_bdat(line) => self.refuse_malformed_bdat(),
            Err(reply) => self.error(reply),
        }
        true
    }

    /// A BDAT command that does not parse: its chunk is on the wire, but where it ends is
    /// unknown, so nothing after it can be read as a command. The transaction is dropped and
    /// the connection closed.
    fn refuse_malformed_bdat(&mut self) {
        self.reset_transaction();
        self.close_with(Reply::new(
            521,
            "5.5.4",
            "Malformed BDAT command, closing connection",
        ));
    }

    fn command(&mut self, cmd: Command, line: &[u8]) {
        let junk = match &cmd {
            Command::Noop | Command::Rset | Command::Vrfy | Command::Help => true,
            Command::Ehlo(_) | Command::Helo(_) => self.greeted != Greeted::No,
            Command::Bdat { size: 0, last } => !last,
            _ => false,
        };
        if junk {
            self.junk += 1;
            if self.junk > self.cfg.max_junk_commands {
                self.reset_transaction();
                return self.close_with(Reply::new(
                    421,
                    "4.7.0",
                    "Too many commands without progress, closing connection",
                ));
            }
        }
        match cmd {
            Command::Ehlo(name) => {
                self.reset_transaction();
                self.greeted = Greeted::Ehlo;
                self.helo = Some(name);
                self.ask(Pending::Features, Action::Ehlo);
            }
            Command::Helo(name) => {
                self.reset_transaction();
                self.greeted = Greeted::Helo;
                self.helo = Some(name);
                self.features = UpstreamFeatures::default();
                self.ask(Pending::Features, Action::Ehlo);
            }
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, .. } => self.auth(&mechanism, line),
            Command::Mail(path) => self.mail(path),
            Command::Rcpt(path) => self.rcpt(path),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.reset_transaction();
                self.send(Reply::new(250, "2.0.0", "OK"));
            }
            Command::Noop => self.send(Reply::new(250, "2.0.0", "OK")),
            Command::Vrfy => self.send(Reply::new(
                252,
                "2.5.0",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Help => self.send(Reply::new(214, "2.0.0", "See RFC 5321")),
            Command::Quit => self.close_with(Reply::new(221, "2.0.0", "Bye")),
        }
    }

    /// Ends the transaction in progress, whatever ends it (RSET, EHLO, HELO): content received
    /// so far (BDAT chunks) is dropped before anything else happens (SECURITY.md I11).
    fn reset_transaction(&mut self) {
        if self.mail_accepted {
            self.actions.push_back(Action::MessageAbort);
            self.actions.push_back(Action::Reset);
        }
        self.tx = None;
        self.mail_accepted = false;
    }

    fn starttls(&mut self) {
        if !self.cfg.starttls || self.tls {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "TLS already active or not available",
            ));
        }
        if self.greeted != Greeted::Ehlo {
            return self.error(Reply::new(503, "5.5.1", "Send EHLO first"));
        }
        if self.mail_accepted {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "STARTTLS not allowed in a transaction",
            ));
        }
        self.discarded_after_starttls = self.input.len();
        self.input.clear();
        self.send(Reply::new(220, "2.0.0", "Ready to start TLS"));
        self.ask(Pending::Tls, Action::StartTls);
    }

    fn auth(&mut self, mechanism: &str, line: &[u8]) {
        if !self.tls && self.cfg.require_tls {
            return self.error(Reply::new(
                530,
                "5.7.0",
                "Must issue a STARTTLS command first",
            ));
        }
        if !self.tls {
            return self.error(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ));
        }
        if self.authenticated || self.mail_accepted || self.greeted != Greeted::Ehlo {
            return self.error(Reply::new(503, "5.5.1", "AUTH not allowed now"));
        }
        if self.features.auth.is_empty() {
            return self.error(Reply::new(502, "5.5.1", "AUTH not available"));
        }
        if !self.features.auth.iter().any(|m| m == mechanism) {
            return self.error(Reply::new(504, "5.5.4", "Unrecognized authentication type"));
        }
        self.ask(Pending::Auth, Action::Auth(Secret::new(line.to_vec())));
    }

    fn mail(&mut self, path: PathWithParams) {
        if self.greeted == Greeted::No {
            return self.error(Reply::new(503, "5.5.1", "Send EHLO or HELO first"));
        }
        if self.cfg.require_tls && !self.tls {
            return self.error(Reply::new(
                530,
                "5.7.0",
                "Must issue a STARTTLS command first",
            ));
        }
        if self.mail_accepted {
            return self.error(Reply::new(503, "5.5.1", "Nested MAIL command"));
        }
        if let Err(reply) = self.check_mail_params(&path) {
            return self.error(reply);
        }
        self.mail_utf8 = path.param("SMTPUTF8").is_some();
        let mut path = path;
        if !self.authenticated {
            // RFC 4954 section 5: a submitter we cannot vouch for becomes "<>"; the client's
            // claim is never passed on to an upstream that may trust it.
            for (k, v) in &mut path.params {
                if k == "AUTH" {
                    *v = Some("<>".into());
                }
            }
        }
        self.ask(Pending::Mail, Action::Mail(path));
    }

    fn rcpt(&mut self, path: PathWithParams) {
        let Some(tx) = &self.tx else {
            return self.error(Reply::new(503, "5.5.1", "Need MAIL before RCPT"));
        };
        if tx.bdat.is_some() {
            return self.error(Reply::new(503, "5.5.1", "RCPT not allowed after BDAT"));
        }
        if tx.recipients >= self.cfg.max_recipients {
            return self.send(Reply::new(452, "4.5.3", "Too many recipients"));
        }
        if let Err(reply) = self.check_rcpt_params(&path) {
            return self.error(reply);
        }
        self.ask(Pending::Rcpt, Action::Rcpt(path));
    }

    fn data(&mut self) {
        let refusal = match &self.tx {
            None => Some((503, "Need MAIL command")),
            Some(tx) if tx.bdat.is_some() => Some((503, "DATA not allowed after BDAT")),
            Some(tx) if tx.recipients == 0 => Some((554, "No valid recipients")),
            Some(_) => None,
        };
        match refusal {
            // RFC 2920 3.1: DATA is the last command of a pipelined group. Bytes already behind
            // a refused DATA are the client's message content: read as commands, a body holding
            // "RCPT TO:" would add recipients, one holding "MAIL FROM:" start a transaction.
            Some((code, text)) if !self.input.is_empty() => {
                if self.mail_accepted {
                    self.actions.push_back(Action::MessageAbort);
                    self.actions.push_back(Action::Reset);
                }
                self.tx = None;
                self.mail_accepted = false;
                self.close_with(Reply::new(
                    code,
                    "5.5.1",
                    format!("{text}; content sent before 354, closing connection"),
                ));
            }
            Some((code, text)) => self.error(Reply::new(code, "5.5.1", text)),
            None => {
                self.phase = Phase::Data(DataReceiver::new());
                // RFC 3463 has no enhanced codes for intermediate replies.
                self.send(Reply::plain(
                    354,
                    vec!["End data with <CR><LF>.<CR><LF>".into()],
                ));
            }
        }
    }

    fn bdat(&mut self, size: u64, last: bool) {
        let max = self.max_size();
        let Some(tx) = self.tx.as_mut().filter(|tx| tx.recipients > 0) else {
            // The chunk is on the wire whatever we think of it: read it, then refuse.
            if size > max {
                return self.close_with(Reply::new(552, "5.3.4", "Chunk too big, closing"));
            }
            self.phase = Phase::BdatDiscard { remaining: size };
            return;
        };
        if tx.size.saturating_add(size) > max {
            self.actions.push_back(Action::MessageAbort);
            self.actions.push_back(Action::Reset);
            return self.close_with(Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size, closing",
            ));
        }
        tx.bdat.get_or_insert_with(BdatChecker::default);
        self.phase = Phase::Bdat {
            remaining: size,
            last,
        };
    }

    fn process_data(&mut self) -> bool {
        let Phase::Data(receiver) = &mut self.phase else {
            return false;
        };
        if self.input.is_empty() {
            return false;
        }
        let mut out = Vec::with_capacity(self.input.len());
        let fed = receiver.feed(&self.input, &mut out);
        let longest = receiver.longest_line();
        let fed = match fed {
            Ok(fed) => fed,
            Err(_) => {
                self.refuse_bare_line_ending();
                return true;
            }
        };
        self.input.drain(..fed.consumed);
        let max = self.max_size();
        if let Some(tx) = self.tx.as_mut() {
            tx.size += out.len() as u64;
            if tx.size > max {
                tx.oversize = true;
            }
            tx.nul |= out.contains(&0);
            if !tx.oversize && !tx.nul && !out.is_empty() {
                self.actions.push_back(Action::Body(out));
            }
        }
        if fed.done {
            self.phase = Phase::Command;
            self.finish_message(longest);
        }
        true
    }

    fn process_bdat(&mut self) -> bool {
        let remaining = match self.phase {
            Phase::Bdat { remaining, .. } | Phase::BdatDiscard { remaining } => remaining,
            _ => return false,
        };
        if remaining > 0 {
            if self.input.is_empty() {
                return false;
            }
            let take = remaining.min(self.input.len() as u64) as usize;
            let chunk: Vec<u8> = self.input.drain(..take).collect();
            match &mut self.phase {
                Phase::Bdat { remaining, .. } | Phase::BdatDiscard { remaining } => {
                    *remaining -= take as u64
                }
                _ => {}
            }
            if let (Phase::Bdat { .. }, Some(tx)) = (&self.phase, self.tx.as_mut()) {
                let checker = tx.bdat.get_or_insert_with(BdatChecker::default);
                if checker.check(&chunk).is_err() {
                    self.refuse_bare_line_ending();
                    return true;
                }
                tx.size += chunk.len() as u64;
                tx.nul |= chunk.contains(&0);
                if !tx.nul {
                    self.actions.push_back(Action::Body(chunk));
                }
            }
            return true;
        }
        // The chunk is complete.
        match std::mem::replace(&mut self.phase, Phase::Command) {
            Phase::BdatDiscard { .. } => {
                self.error(Reply::new(503, "5.5.1", "No valid transaction for BDAT"))
            }
            Phase::Bdat { last: false, .. } => {
                let size = self.tx.as_ref().map_or(0, |tx| tx.size);
                self.send(Reply::new(250, "2.0.0", format!("{size} octets received")));
            }
            Phase::Bdat { last: true, .. } => {
                let (finished, longest) = match self.tx.as_ref().and_then(|tx| tx.bdat.as_ref()) {
                    Some(c) => (c.finish(), c.longest_line()),
                    None => (Ok(()), 0),
                };
                if finished.is_err() {
                    self.refuse_bare_line_ending();
                } else {
                    self.finish_message(longest);
                }
            }
            other => self.phase = other,
        }
        true
    }

    fn finish_message(&mut self, longest_line: usize) {
        let oversize = self.tx.as_ref().is_some_and(|tx| tx.oversize);
        let nul = self.tx.as_ref().is_some_and(|tx| tx.nul);
        let refusal = if oversize {
            Some(Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ))
        } else if nul {
            // A NUL must never reach an upstream that might drop it (in front of a dot, say).
            Some(Reply::new(
                554,
                "5.6.0",
                "NUL octets are not allowed in message content",
            ))
        } else if longest_line > self.cfg.max_line_length {
            Some(Reply::new(
                554,
                "5.6.0",
                format!("Line longer than {} octets", self.cfg.max_line_length),
            ))
        } else {
            None
        };
        match refusal {
            Some(reply) => {
                self.actions.push_back(Action::MessageAbort);
                self.actions.push_back(Action::Reset);
                self.tx = None;
                self.mail_accepted = false;
                self.send(reply);
            }
            None => self.ask(Pending::MessageEnd, Action::MessageEnd),
        }
    }

    fn check_mail_params(&self, path: &PathWithParams) -> Result<(), Reply> {
        let esmtp = self.greeted == Greeted::Ehlo;
        let utf8 = path.param("SMTPUTF8").is_some();
        check_unique(path)?;
        for (k, v) in &path.params {
            let v = v.as_deref();
            let ok = esmtp
                && match k.as_str() {
                    "SIZE" => {
                        let digits = v
                            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                            .ok_or_else(|| Reply::new(501, "5.5.4", "Malformed SIZE"))?;
                        // Any number too large for u64 is certainly above our limit.
                        if digits
                            .parse::<u64>()
                            .map_or(true, |size| size > self.max_size())
                        {
                            return Err(Reply::new(
                                552,
                                "5.3.4",
                                "Message size exceeds fixed maximum message size",
                            ));
                        }
                        true
                    }
                    "BODY" => matches!(
                        v.map(str::to_ascii_uppercase).as_deref(),
                        Some("7BIT" | "8BITMIME")
                    ),
                    "SMTPUTF8" => self.features.smtputf8 && v.is_none(),
                    "RET" => {
                        self.features.dsn
                            && matches!(
                                v.map(str::to_ascii_uppercase).as_deref(),
                                Some("FULL" | "HDRS")
                            )
                    }
                    "ENVID" => self.features.dsn && v.is_some_and(is_xtext),
                    "AUTH" => {
                        (self.auth_offered() || self.authenticated)
                            && v.is_some_and(|v| v == "<>" || is_xtext(v))
                    }
                    _ => false,
                };
            if !ok {
                return Err(Reply::new(
                    555,
                    "5.5.4",
                    format!("Unsupported parameter {k}"),
                ));
            }
        }
        check_ascii(&path.address, utf8)
    }

    fn check_rcpt_params(&self, path: &PathWithParams) -> Result<(), Reply> {
        check_unique(path)?;
        for (k, v) in &path.params {
            let v = v.as_deref();
            let ok = self.features.dsn
                && match k.as_str() {
                    "NOTIFY" => v.is_some_and(valid_notify),
                    "ORCPT" => v.is_some_and(|v| {
                        v.split_once(';')
                            .is_some_and(|(t, a)| !t.is_empty() && !a.is_empty())
                    }),
                    _ => false,
                };
            if !ok {
                return Err(Reply::new(
                    555,
                    "5.5.4",
                    format!("Unsupported parameter {k}"),
                ));
            }
        }
        // RFC 6531: UTF-8 recipients only in a transaction opened with SMTPUTF8.
        check_ascii(
            &path.address,
            self.tx.as_ref().is_some_and(|tx| tx.smtputf8),
        )
    }
}

/// The line is a BDAT command (well-formed or not): its verb is BDAT.
fn is_bdat(line: &[u8]) -> bool {
    line.len() >= 4
        && line[..4].eq_ignore_ascii_case(b"BDAT")
        && matches!(line.get(4), None | Some(b' ' | b'\t' | b'\r' | b'\n'))
}

fn check_unique(path: &PathWithParams) -> Result<(), Reply> {
    for (i, (k, _)) in path.params.iter().enumerate() {
        if path.params[..i].iter().any(|(other, _)| other == k) {
            return Err(Reply::new(501, "5.5.4", format!("Duplicate parameter {k}")));
        }
    }
    Ok(())
}

fn check_ascii(address: &str, utf8_allowed: bool) -> Result<(), Reply> {
    if !address.is_ascii() && !utf8_allowed {
        return Err(Reply::new(553, "5.6.7", "Address needs SMTPUTF8"));
    }
    Ok(())
}

fn is_xtext(v: &str) -> bool {
    v.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'=')
}

fn valid_notify(v: &str) -> bool {
    let v = v.to_ascii_uppercase();
    v == "NEVER"
        || v.split(',')
            .all(|w| matches!(w, "SUCCESS" | "FAILURE" | "DELAY"))
}

#[cfg(test)]
mod tests;
