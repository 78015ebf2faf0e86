//! The async driver of one client connection, over any byte stream: it moves bytes between the
//! stream and the sans-IO [`Session`], applies timeouts, switches to TLS on STARTTLS, keeps the
//! message content in a [`Spool`], asks a [`Backend`] (the upstream relay, or the sink's folder)
//! for verdicts, and closes the session with 421 when the server shuts down ([`Shutdown`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::smtp::command::PathWithParams;
use crate::smtp::spool::Spool;
use crate::smtp::{Action, Reply, Secret, Session, SessionConfig, UpstreamFeatures};

/// Where the session's questions go. Implemented by the relay (upstream MTA) and by the demo's
/// local sink. Only used with static dispatch.
#[allow(async_fn_in_trait)]
pub trait Backend {
    /// The client said EHLO (`esmtp`) or HELO with `name`.
    async fn features(&mut self, name: &str, esmtp: bool) -> UpstreamFeatures;
    async fn mail(&mut self, path: &PathWithParams) -> Reply;
    async fn rcpt(&mut self, path: &PathWithParams) -> Reply;
    /// The complete message; the reply is the client's final reply.
    async fn message(&mut self, content: Spool) -> Reply;
    async fn reset(&mut self);
    async fn auth(&mut self, line: &Secret) -> Reply;
    async fn close(&mut self);
}

/// Per-listener settings of the driver.
#[derive(Clone)]
pub struct ListenerRuntime {
    pub session: SessionConfig,
    pub acceptor: Option<TlsAcceptor>,
    pub implicit_tls: bool,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub handshake_timeout: Duration,
    pub memory_spool: usize,
    pub spool_dir: Option<std::path::PathBuf>,
    /// Longest life of one client connection.
    pub session_timeout: Duration,
    /// Messages from unauthenticated clients may be signed (listen.sign_without_auth).
    pub sign_without_auth: bool,
    /// Only these clients may connect (listen.allow_from); None: any.
    pub allow_from: Option<crate::config::netlist::NetList>,
    /// A PROXY header comes first, from these addresses only (listen.proxy_protocol).
    pub proxy: Option<(
        crate::serve::proxy_protocol::Version,
        crate::config::netlist::NetList,
    )>,
    /// Slowest message content accepted, bytes per second over each `data_rate_window`
    /// (0: no check).
    pub min_data_rate: u64,
    pub data_rate_window: Duration,
}

/// Measures the data rate of message content over consecutive windows: a client that sends
/// less than the minimum in a window is cut, however it spreads its bytes.
#[derive(Debug)]
struct RateWindow {
    start: Instant,
    length: Duration,
    bytes: u64,
}

impl RateWindow {
    fn new(now: Instant, length: Duration) -> Self {
        RateWindow {
            start: now,
            length,
            bytes: 0,
        }
    }

    fn end(&self) -> Instant {
        self.start + self.length
    }

    /// At or after the window's end: false when the window fell short of `min` bytes per
    /// second; otherwise a new window starts.
    fn check(&mut self, now: Instant, min: u64) -> bool {
        if now < self.end() {
            return true;
        }
        let needed = (u128::from(min) * self.length.as_millis() / 1000) as u64;
        let ok = self.bytes >= needed;
        *self = RateWindow::new(now, self.length);
        ok
    }
}

/// How far the server's shutdown has gone, as its connections hear it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Serving.
    Running,
    /// Shutting down: an idle session is closed with 421 at once, a transaction in progress
    /// may finish.
    Drain,
    /// The grace period is over: every session is closed with 421 at once.
    Now,
}

/// A connection's view of the server's shutdown: a [`Stop`] that only moves forward.
#[derive(Clone, Debug)]
pub struct Shutdown(Option<watch::Receiver<Stop>>);

impl Shutdown {
    /// Follows `stop`; a server gone (its sender dropped) counts as [`Stop::Now`].
    pub fn new(stop: watch::Receiver<Stop>) -> Self {
        Shutdown(Some(stop))
    }

    /// For a server that never shuts its sessions down (the sink).
    pub fn never() -> Self {
        Shutdown(None)
    }

    fn stop(&mut self) -> Stop {
        match &mut self.0 {
            None => Stop::Running,
            Some(rx) if rx.has_changed().is_err() => Stop::Now,
            Some(rx) => *rx.borrow_and_update(),
        }
    }

    /// Resolves when the stage may have changed (never for [`Shutdown::never`]).
    async fn changed(&mut self) {
        match &mut self.0 {
            None => std::future::pending().await,
            Some(rx) => {
                let _ = rx.changed().await;
            }
        }
    }
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A short id that ties the log lines of one connection together.
pub fn session_id() -> String {
    let n = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:06x}", std::process::id() & 0xffff, n)
}

/// Serves one client connection to the end, over any byte stream: a TCP connection (with
/// implicit TLS or STARTTLS when the listener has them), or an in-memory pipe in tests.
pub async fn serve<S, B>(
    stream: S,
    peer: SocketAddr,
    rt: Arc<ListenerRuntime>,
    backend: &mut B,
    id: &str,
    shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    B: Backend,
{
    let mut conn = Connection {
        session: Session::new(rt.session.clone()),
        session_end: Instant::now() + rt.session_timeout,
        rt: rt.clone(),
        spool: None,
        out: Vec::with_capacity(1024),
        id,
        peer,
        shutdown,
        message_started: None,
        from: String::new(),
        recipients: 0,
    };
    if rt.implicit_tls {
        if let Some(mut tls) = conn.handshake(stream, "TLS handshake").await {
            conn.drive(&mut tls, backend).await;
        }
    } else {
        let mut plain = stream;
        if conn.drive(&mut plain, backend).await == End::StartTls {
            if let Some(mut tls) = conn.handshake(plain, "STARTTLS handshake").await {
                conn.tls_established();
                conn.drive(&mut tls, backend).await;
            }
        }
    }
    backend.close().await;
}

/// How [`Connection::drive`] left the stream.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Closed,
    /// The 220 to STARTTLS is flushed: the TLS handshake comes next.
    StartTls,
}

/// What [`Connection::act`] asks of the loop.
enum Next {
    Continue,
    StartTls,
    Close,
}

/// What one read brought.
enum Input {
    Bytes(usize),
    /// Nothing for the session: look at the shutdown stage and the deadlines again.
    Again,
    TimedOut,
    TooSlow,
    /// The client closed the connection or it broke.
    Gone,
}

/// The read deadlines: the session's life, the command in progress, the content's data rate.
struct Clock {
    session_end: Instant,
    /// A command must be complete within command_timeout of its first byte, however slowly
    /// it trickles in (a byte every few seconds must not hold a connection forever).
    command_deadline: Option<Instant>,
    lines_seen: u64,
    rate: Option<RateWindow>,
    /// The data timeout of the read in progress.
    data_deadline: Instant,
}

impl Clock {
    fn new(session_end: Instant) -> Self {
        Clock {
            session_end,
            command_deadline: None,
            lines_seen: 0,
            rate: None,
            data_deadline: session_end,
        }
    }

    /// When the next read times out.
    fn next_deadline(&mut self, session: &Session, rt: &ListenerRuntime) -> Instant {
        let now = Instant::now();
        if !session.in_data() || rt.min_data_rate == 0 {
            self.rate = None;
        }
        self.data_deadline = now + rt.data_timeout;
        let deadline = if session.in_data() {
            self.command_deadline = None;
            match rt.min_data_rate {
                0 => self.data_deadline,
                _ => self.data_deadline.min(
                    self.rate
                        .get_or_insert_with(|| RateWindow::new(now, rt.data_rate_window))
                        .end(),
                ),
            }
        } else {
            // A new command starts when the buffer is empty or a line was completed.
            if session.buffered() == 0 || session.lines_taken() != self.lines_seen {
                self.command_deadline = None;
            }
            self.lines_seen = session.lines_taken();
            *self
                .command_deadline
                .get_or_insert(now + rt.command_timeout)
        };
        deadline.min(self.session_end)
    }

    /// Judges a read that ended (`timed_out` or with `n` bytes) against the data rate, at the
    /// end of each window (SECURITY.md I9). None: the read stands as it is.
    fn judge_rate(&mut self, n: usize, timed_out: bool, min_rate: u64) -> Option<Input> {
        let window = self.rate.as_mut()?;
        window.bytes += n as u64;
        let now = Instant::now();
        if now < window.end() {
            return None;
        }
        if !window.check(now, min_rate) {
            return Some(Input::TooSlow);
        }
        // A read that timed out because the window ended is not a timeout of the client.
        (timed_out && now < self.data_deadline && now < self.session_end).then_some(Input::Again)
    }
}

struct Connection<'a> {
    session: Session,
    rt: Arc<ListenerRuntime>,
    /// When the connection has lived as long as it may.
    session_end: Instant,
    spool: Option<Spool>,
    out: Vec<u8>,
    id: &'a str,
    peer: SocketAddr,
    shutdown: Shutdown,
    message_started: Option<std::time::Instant>,
    /// Envelope of the transaction in progress, for the log line.
    from: String,
    recipients: usize,
}

impl Connection<'_> {
    /// Runs the session over `stream` until it closes or asks for TLS.
    async fn drive<S, B>(&mut self, stream: &mut S, backend: &mut B) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
        B: Backend,
    {
        let mut buf = vec![0u8; 64 * 1024];
        let mut clock = Clock::new(self.session_end);
        loop {
            while let Some(action) = self.session.next_action() {
                match self.act(action, backend).await {
                    Next::Continue => {}
                    Next::StartTls if self.flush(stream).await => return End::StartTls,
                    Next::StartTls => return End::Closed,
                    Next::Close => {
                        self.flush(stream).await;
                        let _ = stream.shutdown().await;
                        return End::Closed;
                    }
                }
            }
            if !self.flush(stream).await {
                return End::Closed;
            }
            if self.must_stop() {
                self.session.shutting_down();
                continue;
            }
            match self.read(stream, &mut buf, &mut clock).await {
                Input::Bytes(n) => self.session.feed(&buf[..n]),
                Input::Again => {}
                Input::TimedOut => self.session.timed_out(),
                Input::TooSlow => {
                    tracing::info!(session = self.id, peer = %self.peer, "message content slower than limits.min_data_rate; closing");
                    self.session.too_slow();
                }
                Input::Gone => {
                    if self.spool.take().is_some() || self.session.in_data() {
                        tracing::info!(session = self.id, peer = %self.peer, "client vanished during message content; nothing relayed");
                    }
                    return End::Closed;
                }
            }
        }
    }

    /// At shutdown, whether the session is to be closed now: when it is idle (no transaction
    /// in progress), or when the grace period is over.
    fn must_stop(&mut self) -> bool {
        let busy = self.session.in_data() || self.session.in_transaction();
        match self.shutdown.stop() {
            Stop::Running => false,
            Stop::Drain if busy => false,
            Stop::Drain => {
                tracing::info!(session = self.id, peer = %self.peer, "shutting down: idle session closed");
                true
            }
            Stop::Now => {
                if busy {
                    tracing::warn!(session = self.id, peer = %self.peer, "grace period over: transaction in progress abandoned");
                }
                true
            }
        }
    }

    /// Reads what the client sends next, within the deadlines; a change of the shutdown stage
    /// interrupts it.
    async fn read<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        buf: &mut [u8],
        clock: &mut Clock,
    ) -> Input {
        let deadline = clock.next_deadline(&self.session, &self.rt);
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline, stream.read(buf)) => read,
            _ = self.shutdown.changed() => return Input::Again,
        };
        let n = match &read {
            Ok(Ok(n)) => *n,
            _ => 0,
        };
        if let Some(verdict) = clock.judge_rate(n, read.is_err(), self.rt.min_data_rate) {
            return verdict;
        }
        match read {
            Err(_) => Input::TimedOut,
            Ok(Ok(0)) | Ok(Err(_)) => Input::Gone,
            Ok(Ok(n)) => Input::Bytes(n),
        }
    }

    /// Carries out one action.
    async fn act<B: Backend>(&mut self, action: Action, backend: &mut B) -> Next {
        match action {
            Action::Send(reply) => self.out.extend_from_slice(&reply.to_bytes()),
            Action::StartTls => return Next::StartTls,
            Action::Ehlo => {
                let (name, esmtp) = self
                    .session
                    .helo()
                    .map_or((String::new(), true), |(n, e)| (n.to_string(), e));
                let features = backend.features(&name, esmtp).await;
                self.session.features(features);
            }
            Action::Mail(path) => {
                // A new transaction never starts with content of an earlier one (I11).
                self.spool = None;
                let reply = backend.mail(&path).await;
                if reply.is_positive() {
                    self.message_started = Some(std::time::Instant::now());
                    self.from = path.address.clone();
                    self.recipients = 0;
                }
                self.session.answer(reply);
            }
            Action::Rcpt(path) => {
                let reply = backend.rcpt(&path).await;
                if reply.is_positive() {
                    self.recipients += 1;
                }
                self.session.answer(reply);
            }
            Action::Body(bytes) => self.spool_body(&bytes),
            Action::MessageEnd => self.message_end(backend).await,
            Action::MessageAbort => self.spool = None,
            Action::Reset => {
                self.spool = None;
                backend.reset().await
            }
            Action::Auth(line) => {
                let reply = backend.auth(&line).await;
                self.session.answer(reply);
            }
            Action::Close => return Next::Close,
        }
        Next::Continue
    }

    fn spool_body(&mut self, bytes: &[u8]) {
        let rt = &self.rt;
        let spool = self
            .spool
            .get_or_insert_with(|| Spool::new(rt.memory_spool, rt.spool_dir.clone()));
        if let Err(e) = spool.write(bytes) {
            tracing::error!(session = self.id, error = %e, "cannot spool message content");
            self.spool = None;
            self.session.fail_local(Reply::new(
                421,
                "4.3.0",
                "Local error in processing, closing connection",
            ));
        }
    }

    /// Hands the complete message to the backend and the backend's reply to the client.
    async fn message_end<B: Backend>(&mut self, backend: &mut B) {
        let spool = self.spool.take().unwrap_or_else(|| Spool::new(0, None));
        let size = spool.len();
        let reply = backend.message(spool).await;
        let elapsed = self
            .message_started
            .take()
            .map(|t| t.elapsed().as_millis() as u64);
        tracing::info!(
            session = self.id,
            peer = %self.peer,
            from = %self.from,
            recipients = self.recipients,
            size,
            reply = %reply,
            elapsed_ms = elapsed.unwrap_or(0),
            "message"
        );
        self.session.answer(reply);
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let write = async {
            stream.write_all(&self.out).await?;
            stream.flush().await
        };
        let ok = tokio::time::timeout(self.rt.command_timeout, write)
            .await
            .is_ok_and(|r| r.is_ok());
        self.out.clear();
        ok
    }

    /// The TLS handshake on `stream` (`what`, for the log), within the handshake timeout.
    async fn handshake<S>(&self, stream: S, what: &str) -> Option<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = self.rt.acceptor.as_ref()?;
        match tokio::time::timeout(self.rt.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                tracing::info!(session = self.id, peer = %self.peer, error = %e, "{what} failed");
                None
            }
            Err(_) => {
                tracing::info!(session = self.id, peer = %self.peer, "{what} timed out");
                None
            }
        }
    }

    /// STARTTLS succeeded: the session starts over under TLS.
    fn tls_established(&mut self) {
        if self.session.discarded_after_starttls() > 0 {
            tracing::warn!(
                session = self.id,
                peer = %self.peer,
                bytes = self.session.discarded_after_starttls(),
                "discarded plaintext pipelined behind STARTTLS"
            );
        }
        self.session.tls_established();
    }
}

#[cfg(test)]
mod tests;
