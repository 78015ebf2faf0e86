//! The async driver of one client connection: it moves bytes between the socket and the sans-IO
//! [`Session`], applies timeouts, switches to TLS on STARTTLS, keeps the message content in a
//! [`Spool`], and asks a [`Backend`] (the upstream relay, or the demo's folder) for verdicts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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
    start: tokio::time::Instant,
    length: Duration,
    bytes: u64,
}

impl RateWindow {
    fn new(now: tokio::time::Instant, length: Duration) -> Self {
        RateWindow {
            start: now,
            length,
            bytes: 0,
        }
    }

    fn end(&self) -> tokio::time::Instant {
        self.start + self.length
    }

    /// At or after the window's end: false when the window fell short of `min` bytes per
    /// second; otherwise a new window starts.
    fn check(&mut self, now: tokio::time::Instant, min: u64) -> bool {
        if now < self.end() {
            return true;
        }
        let needed = (u128::from(min) * self.length.as_millis() / 1000) as u64;
        let ok = self.bytes >= needed;
        *self = RateWindow::new(now, self.length);
        ok
    }
}

enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClientStream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.read(buf).await,
            ClientStream::Tls(s) => s.read(buf).await,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            ClientStream::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            ClientStream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            ClientStream::Plain(s) => s.shutdown().await,
            ClientStream::Tls(s) => s.shutdown().await,
        };
    }
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A short id that ties the log lines of one connection together.
pub fn session_id() -> String {
    let n = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:06x}", std::process::id() & 0xffff, n)
}

/// Serves one client connection to the end.
pub async fn serve<B: Backend>(
    tcp: TcpStream,
    peer: SocketAddr,
    rt: Arc<ListenerRuntime>,
    backend: &mut B,
    id: &str,
) {
    let _ = tcp.set_nodelay(true);
    let stream = if rt.implicit_tls {
        let Some(acceptor) = &rt.acceptor else {
            return;
        };
        match tokio::time::timeout(rt.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => ClientStream::Tls(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::info!(session = id, %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::info!(session = id, %peer, "TLS handshake timed out");
                return;
            }
        }
    } else {
        ClientStream::Plain(tcp)
    };
    let mut conn = Connection {
        stream: Some(stream),
        session: Session::new(rt.session.clone()),
        rt,
        spool: None,
        out: Vec::with_capacity(1024),
        id,
        peer,
        message_started: None,
        from: String::new(),
        recipients: 0,
    };
    conn.run(backend).await;
    backend.close().await;
}

struct Connection<'a> {
    stream: Option<ClientStream>,
    session: Session,
    rt: Arc<ListenerRuntime>,
    spool: Option<Spool>,
    out: Vec<u8>,
    id: &'a str,
    peer: SocketAddr,
    message_started: Option<Instant>,
    /// Envelope of the transaction in progress, for the log line.
    from: String,
    recipients: usize,
}

impl Connection<'_> {
    async fn run<B: Backend>(&mut self, backend: &mut B) {
        let mut buf = vec![0u8; 64 * 1024];
        let session_end = tokio::time::Instant::now() + self.rt.session_timeout;
        // A command must be complete within command_timeout of its first byte, however slowly
        // it trickles in (a byte every few seconds must not hold a connection forever).
        let mut command_deadline: Option<tokio::time::Instant> = None;
        let mut lines_seen = 0;
        let mut rate: Option<RateWindow> = None;
        loop {
            while let Some(action) = self.session.next_action() {
                if !self.act(action, backend).await {
                    self.flush().await;
                    if let Some(s) = self.stream.as_mut() {
                        s.shutdown().await;
                    }
                    return;
                }
            }
            if !self.flush().await {
                return;
            }
            let Some(stream) = self.stream.as_mut() else {
                return;
            };
            let now = tokio::time::Instant::now();
            let min_rate = self.rt.min_data_rate;
            if !self.session.in_data() || min_rate == 0 {
                rate = None;
            }
            let data_deadline = now + self.rt.data_timeout;
            let deadline = if self.session.in_data() {
                command_deadline = None;
                match (min_rate, &mut rate) {
                    (0, _) => data_deadline,
                    (_, window) => data_deadline.min(
                        window
                            .get_or_insert_with(|| RateWindow::new(now, self.rt.data_rate_window))
                            .end(),
                    ),
                }
            } else {
                // A new command starts when the buffer is empty or a line was completed.
                if self.session.buffered() == 0 || self.session.lines_taken() != lines_seen {
                    command_deadline = None;
                }
                lines_seen = self.session.lines_taken();
                *command_deadline.get_or_insert(now + self.rt.command_timeout)
            };
            let read =
                tokio::time::timeout_at(deadline.min(session_end), stream.read(&mut buf)).await;
            if let (Ok(Ok(n)), Some(window)) = (&read, rate.as_mut()) {
                window.bytes += *n as u64;
            }
            // The content's data rate, at the end of each window (SECURITY.md I9). A read that
            // timed out because the window ended is not a timeout of the client.
            let now = tokio::time::Instant::now();
            if let Some(window) = rate.as_mut().filter(|w| now >= w.end()) {
                if !window.check(now, min_rate) {
                    tracing::info!(session = self.id, peer = %self.peer, "message content slower than limits.min_data_rate; closing");
                    self.session.too_slow();
                    continue;
                }
                if read.is_err() && now < data_deadline && now < session_end {
                    continue;
                }
            }
            match read {
                Err(_) => self.session.timed_out(),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    if self.spool.take().is_some() || self.session.in_data() {
                        tracing::info!(session = self.id, peer = %self.peer, "client vanished during message content; nothing relayed");
                    }
                    return;
                }
                Ok(Ok(n)) => self.session.feed(&buf[..n]),
            }
        }
    }

    /// Carries out one action. Returns false when the connection must close.
    async fn act<B: Backend>(&mut self, action: Action, backend: &mut B) -> bool {
        match action {
            Action::Send(reply) => self.out.extend_from_slice(&reply.to_bytes()),
            Action::StartTls => return self.starttls().await,
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
                    self.message_started = Some(Instant::now());
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
            Action::Body(bytes) => {
                let rt = &self.rt;
                let spool = self
                    .spool
                    .get_or_insert_with(|| Spool::new(rt.memory_spool, rt.spool_dir.clone()));
                if let Err(e) = spool.write(&bytes) {
                    tracing::error!(session = self.id, error = %e, "cannot spool message content");
                    self.spool = None;
                    self.session.fail_local(Reply::new(
                        421,
                        "4.3.0",
                        "Local error in processing, closing connection",
                    ));
                }
            }
            Action::MessageEnd => {
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
            Action::MessageAbort => self.spool = None,
            Action::Reset => {
                self.spool = None;
                backend.reset().await
            }
            Action::Auth(line) => {
                let reply = backend.auth(&line).await;
                self.session.answer(reply);
            }
            Action::Close => return false,
        }
        true
    }

    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        let ok = tokio::time::timeout(self.rt.command_timeout, stream.write_all(&self.out))
            .await
            .is_ok_and(|r| r.is_ok());
        self.out.clear();
        ok
    }

    async fn starttls(&mut self) -> bool {
        if !self.flush().await {
            return false;
        }
        let (Some(ClientStream::Plain(tcp)), Some(acceptor)) =
            (self.stream.take(), self.rt.acceptor.clone())
        else {
            return false;
        };
        match tokio::time::timeout(self.rt.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                if self.session.discarded_after_starttls() > 0 {
                    tracing::warn!(
                        session = self.id,
                        peer = %self.peer,
                        bytes = self.session.discarded_after_starttls(),
                        "discarded plaintext pipelined behind STARTTLS"
                    );
                }
                self.stream = Some(ClientStream::Tls(Box::new(tls)));
                self.session.tls_established();
                true
            }
            Ok(Err(e)) => {
                tracing::info!(session = self.id, peer = %self.peer, error = %e, "STARTTLS handshake failed");
                false
            }
            Err(_) => {
                tracing::info!(session = self.id, peer = %self.peer, "STARTTLS handshake timed out");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_rate_is_judged_per_window() {
        let t0 = tokio::time::Instant::now();
        let second = Duration::from_secs(1);
        let mut w = RateWindow::new(t0, 30 * second);
        w.bytes = 29 * 1024;
        assert!(
            w.check(t0 + 10 * second, 1024),
            "not judged before the window ends"
        );
        assert_eq!(w.bytes, 29 * 1024);
        assert!(
            !w.check(t0 + 30 * second, 1024),
            "29 KB in 30 s is below 1 KB/s"
        );
        let t1 = t0 + 30 * second;
        assert_eq!((w.start, w.bytes), (t1, 0), "a new window starts");
        w.bytes = 30 * 1024;
        assert!(
            w.check(t1 + 30 * second, 1024),
            "exactly the minimum passes"
        );
        let mut w = RateWindow::new(t0, Duration::from_millis(1500));
        w.bytes = 1499;
        assert!(!w.check(t0 + Duration::from_millis(1500), 1000));
    }
}
