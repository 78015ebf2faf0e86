//! The driver over in-memory pipes: a fake backend records what it is asked, a test client
//! speaks SMTP to it (in clear and under TLS), and a watch channel plays the server's shutdown.

use std::time::Duration;

use tokio::io::DuplexStream;
use tokio::task::JoinHandle;

use super::*;

/// Records every question in order; accepts everything except the recipients in `refused`.
#[derive(Default)]
struct Fake {
    calls: Vec<String>,
    refused: Vec<&'static str>,
}

impl Backend for Fake {
    async fn features(&mut self, name: &str, esmtp: bool) -> UpstreamFeatures {
        self.calls.push(format!("features {name} {esmtp}"));
        UpstreamFeatures {
            eightbitmime: true,
            ..UpstreamFeatures::default()
        }
    }

    async fn mail(&mut self, path: &PathWithParams) -> Reply {
        self.calls.push(format!("mail {}", path.address));
        Reply::new(250, "2.1.0", "OK")
    }

    async fn rcpt(&mut self, path: &PathWithParams) -> Reply {
        self.calls.push(format!("rcpt {}", path.address));
        if self.refused.contains(&path.address.as_str()) {
            return Reply::new(550, "5.1.1", "No such user");
        }
        Reply::new(250, "2.1.5", "OK")
    }

    async fn message(&mut self, content: Spool) -> Reply {
        let bytes = content.into_bytes().expect("spool readable");
        self.calls
            .push(format!("message {}", String::from_utf8_lossy(&bytes)));
        Reply::new(250, "2.0.0", "Queued")
    }

    async fn reset(&mut self) {
        self.calls.push("reset".into());
    }

    async fn auth(&mut self, _line: &Secret) -> Reply {
        Reply::new(502, "5.5.1", "AUTH not available")
    }

    async fn close(&mut self) {
        self.calls.push("close".into());
    }
}

fn runtime() -> ListenerRuntime {
    ListenerRuntime {
        session: SessionConfig {
            hostname: "mx.test".into(),
            max_errors: 2,
            ..SessionConfig::default()
        },
        acceptor: None,
        implicit_tls: false,
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(5),
        memory_spool: 1 << 20,
        spool_dir: None,
        session_timeout: Duration::from_secs(60),
        sign_without_auth: false,
        allow_from: None,
        proxy: None,
        min_data_rate: 0,
        data_rate_window: Duration::from_secs(30),
    }
}

/// The client's end of a connection.
struct Client<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next complete reply (all its lines); None when the connection closes first.
    async fn reply(&mut self) -> Option<String> {
        self.reply_within(Duration::from_secs(5))
            .await
            .expect("a reply or the end of the connection within the time")
    }

    /// Like [`Client::reply`]; Err when nothing complete arrives within `time`.
    async fn reply_within(&mut self, time: Duration) -> Result<Option<String>, ()> {
        let deadline = Instant::now() + time;
        loop {
            if let Some(end) = reply_end(&self.buf) {
                let reply: Vec<u8> = self.buf.drain(..end).collect();
                return Ok(Some(String::from_utf8_lossy(&reply).into_owned()));
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk));
            match read.await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await.expect("a reply")
    }
}

/// The length of the first complete reply in `buf` (its last line has no '-' after the code).
fn reply_end(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(lf) = buf[at..].iter().position(|&b| b == b'\n') {
        let line = &buf[at..at + lf + 1];
        at += lf + 1;
        if line.get(3) != Some(&b'-') {
            return Some(at);
        }
    }
    None
}

/// Serves one in-memory connection with `backend`; the task gives the backend back at the end.
fn start(
    rt: ListenerRuntime,
    mut backend: Fake,
    shutdown: Shutdown,
) -> (Client<DuplexStream>, JoinHandle<Fake>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let peer: SocketAddr = "192.0.2.1:4711".parse().expect("address");
    let task = tokio::spawn(async move {
        serve(server, peer, Arc::new(rt), &mut backend, "t1", shutdown).await;
        backend
    });
    (Client::new(client), task)
}

/// Greeted and past EHLO.
async fn ehlo(c: &mut Client<DuplexStream>) {
    assert_eq!(c.reply().await.unwrap(), "220 mx.test ESMTP sealgate\r\n");
    assert!(c
        .cmd("EHLO client.test")
        .await
        .starts_with("250-mx.test\r\n"));
}

/// A transaction up to the middle of its content.
async fn into_data(c: &mut Client<DuplexStream>) {
    ehlo(c).await;
    assert!(c.cmd("MAIL FROM:<a@x.test>").await.starts_with("250 "));
    assert!(c.cmd("RCPT TO:<b@y.test>").await.starts_with("250 "));
    assert!(c.cmd("DATA").await.starts_with("354 "));
    c.send(b"Subject: t\r\n\r\nfirst half, ").await;
}

fn stage() -> (watch::Sender<Stop>, Shutdown) {
    let (tx, rx) = watch::channel(Stop::Running);
    (tx, Shutdown::new(rx))
}

#[tokio::test]
async fn a_whole_transaction_reaches_the_backend_in_command_order() {
    let fake = Fake {
        refused: vec!["nobody@y.test"],
        ..Fake::default()
    };
    let (mut c, task) = start(runtime(), fake, Shutdown::never());
    assert_eq!(c.reply().await.unwrap(), "220 mx.test ESMTP sealgate\r\n");
    let features = c.cmd("EHLO client.test").await;
    assert!(features.contains("250-PIPELINING\r\n"), "{features}");
    assert!(
        !features.contains("STARTTLS"),
        "no TLS configured: {features}"
    );
    // Pipelined: the replies come back in command order.
    c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<nobody@y.test>\r\nDATA\r\n")
        .await;
    assert_eq!(c.reply().await.unwrap(), "250 2.1.0 OK\r\n");
    assert_eq!(c.reply().await.unwrap(), "250 2.1.5 OK\r\n");
    assert_eq!(c.reply().await.unwrap(), "550 5.1.1 No such user\r\n");
    assert!(c.reply().await.unwrap().starts_with("354 "));
    let reply = c.cmd("Subject: t\r\n\r\n..leading dot\r\nend\r\n.").await;
    assert_eq!(reply, "250 2.0.0 Queued\r\n");
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye\r\n");
    assert_eq!(c.reply().await, None, "closed after QUIT");
    let calls = task.await.unwrap().calls;
    assert_eq!(
        calls,
        [
            "features client.test true",
            "mail a@x.test",
            "rcpt b@y.test",
            "rcpt nobody@y.test",
            "message Subject: t\r\n\r\n.leading dot\r\nend\r\n",
            "close"
        ]
    );
}

#[tokio::test]
async fn rset_ends_the_transaction_at_the_backend() {
    let (mut c, task) = start(runtime(), Fake::default(), Shutdown::never());
    ehlo(&mut c).await;
    assert!(c.cmd("MAIL FROM:<a@x.test>").await.starts_with("250 "));
    assert!(c.cmd("RSET").await.starts_with("250 "));
    assert!(c.cmd("QUIT").await.starts_with("221 "));
    let calls = task.await.unwrap().calls;
    assert_eq!(calls[1..], ["mail a@x.test", "reset", "close"]);
}

#[tokio::test]
async fn starttls_is_refused_when_the_listener_has_no_tls() {
    let (mut c, task) = start(runtime(), Fake::default(), Shutdown::never());
    ehlo(&mut c).await;
    assert_eq!(
        c.cmd("STARTTLS").await,
        "503 5.5.1 TLS already active or not available\r\n"
    );
    assert!(c.cmd("NOOP").await.starts_with("250 "), "still in service");
    drop(c);
    assert_eq!(task.await.unwrap().calls.last().unwrap(), "close");
}

/// A TLS server configuration for `localhost` and a client that trusts it.
fn tls_pair() -> (TlsAcceptor, tokio_rustls::TlsConnector) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (
        TlsAcceptor::from(Arc::new(server)),
        tokio_rustls::TlsConnector::from(Arc::new(client)),
    )
}

#[tokio::test]
async fn starttls_moves_the_same_session_onto_tls_and_drops_what_was_pipelined() {
    let (acceptor, connector) = tls_pair();
    let mut rt = runtime();
    rt.acceptor = Some(acceptor);
    rt.session.starttls = true;
    let (mut c, task) = start(rt, Fake::default(), Shutdown::never());
    assert!(c.reply().await.unwrap().starts_with("220 "));
    assert!(c.cmd("EHLO client.test").await.contains("STARTTLS\r\n"));
    // A command smuggled behind STARTTLS must never be answered (SECURITY.md I2).
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n").await;
    assert_eq!(c.reply().await.unwrap(), "220 2.0.0 Ready to start TLS\r\n");
    assert!(c.buf.is_empty());
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, c.stream).await.expect("handshake");
    let mut c = Client::new(tls);
    let features = c.cmd("EHLO client.test").await;
    assert!(features.starts_with("250-mx.test\r\n"), "{features}");
    assert!(!features.contains("STARTTLS"), "{features}");
    assert!(c.cmd("MAIL FROM:<a@x.test>").await.starts_with("250 "));
    assert!(c.cmd("QUIT").await.starts_with("221 "));
    let calls = task.await.unwrap().calls;
    assert_eq!(
        calls,
        [
            "features client.test true",
            "features client.test true",
            "mail a@x.test",
            "close"
        ]
    );
}

#[tokio::test]
async fn implicit_tls_greets_after_the_handshake() {
    let (acceptor, connector) = tls_pair();
    let mut rt = runtime();
    rt.acceptor = Some(acceptor);
    rt.implicit_tls = true;
    rt.session.implicit_tls = true;
    let (c, task) = start(rt, Fake::default(), Shutdown::never());
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut c = Client::new(connector.connect(name, c.stream).await.expect("handshake"));
    assert_eq!(c.reply().await.unwrap(), "220 mx.test ESMTP sealgate\r\n");
    assert!(c.cmd("QUIT").await.starts_with("221 "));
    assert_eq!(task.await.unwrap().calls, ["close"]);
}

#[tokio::test]
async fn a_silent_client_is_timed_out_with_421() {
    let mut rt = runtime();
    rt.command_timeout = Duration::from_millis(200);
    let (mut c, task) = start(rt, Fake::default(), Shutdown::never());
    assert!(c.reply().await.unwrap().starts_with("220 "));
    let started = Instant::now();
    assert_eq!(
        c.reply().await.unwrap(),
        "421 4.4.2 Timeout, closing connection\r\n"
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(c.reply().await, None);
    assert_eq!(task.await.unwrap().calls, ["close"]);
}

#[tokio::test]
async fn a_command_trickled_a_byte_at_a_time_is_timed_out_all_the_same() {
    let mut rt = runtime();
    rt.command_timeout = Duration::from_millis(300);
    let (mut c, _task) = start(rt, Fake::default(), Shutdown::never());
    assert!(c.reply().await.unwrap().starts_with("220 "));
    let started = Instant::now();
    for b in b"NOOP and then some more bytes".iter().cycle().take(20) {
        // The driver may have closed the connection already.
        let _ = c.stream.write_all(&[*b]).await;
        match c.reply_within(Duration::from_millis(100)).await {
            Err(()) => continue,
            Ok(reply) => {
                let reply = reply.expect("a reply before the end");
                assert_eq!(reply, "421 4.4.2 Timeout, closing connection\r\n");
                assert!(started.elapsed() < Duration::from_millis(900));
                return;
            }
        }
    }
    panic!("a byte every 100 ms kept the command alive for 2 s");
}

#[tokio::test]
async fn junk_closes_the_connection_after_max_errors() {
    let (mut c, task) = start(runtime(), Fake::default(), Shutdown::never());
    assert!(c.reply().await.unwrap().starts_with("220 "));
    assert!(c.cmd("\u{1}junk").await.starts_with("500 "));
    assert!(c.cmd("XYZZY").await.starts_with("500 "));
    let last = c.cmd("PLUGH").await;
    assert_eq!(last, "421 4.7.0 Too many errors, closing connection\r\n");
    assert_eq!(c.reply().await, None);
    assert_eq!(task.await.unwrap().calls, ["close"]);
}

#[tokio::test]
async fn a_client_gone_in_the_middle_of_the_content_sends_nothing() {
    let (mut c, task) = start(runtime(), Fake::default(), Shutdown::never());
    into_data(&mut c).await;
    drop(c);
    let calls = task.await.unwrap().calls;
    assert!(calls.iter().all(|c| !c.starts_with("message")), "{calls:?}");
    assert_eq!(calls.last().unwrap(), "close");
}

#[tokio::test]
async fn at_shutdown_an_idle_session_gets_421_at_once() {
    let (stop, shutdown) = stage();
    let (mut c, task) = start(runtime(), Fake::default(), shutdown);
    ehlo(&mut c).await;
    let started = Instant::now();
    stop.send(Stop::Drain).unwrap();
    assert_eq!(
        c.reply().await.unwrap(),
        "421 4.3.2 Service shutting down\r\n"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(c.reply().await, None, "and closed");
    assert_eq!(task.await.unwrap().calls.last().unwrap(), "close");
}

#[tokio::test]
async fn at_shutdown_a_transaction_in_progress_may_finish_then_gets_421() {
    let (stop, shutdown) = stage();
    let (mut c, task) = start(runtime(), Fake::default(), shutdown);
    into_data(&mut c).await;
    stop.send(Stop::Drain).unwrap();
    let quiet = c.reply_within(Duration::from_millis(200)).await;
    assert_eq!(quiet, Err(()), "nothing said in the middle of the content");
    c.send(b"second half\r\n.\r\n").await;
    assert_eq!(c.reply().await.unwrap(), "250 2.0.0 Queued\r\n");
    assert_eq!(
        c.reply().await.unwrap(),
        "421 4.3.2 Service shutting down\r\n",
        "then closed as idle, unasked"
    );
    assert_eq!(c.reply().await, None);
    let calls = task.await.unwrap().calls;
    let message = "message Subject: t\r\n\r\nfirst half, second half\r\n";
    assert_eq!(calls[3..], [message, "close"]);
}

#[tokio::test]
async fn at_shutdown_a_session_between_mail_and_data_is_not_idle() {
    let (stop, shutdown) = stage();
    let (mut c, _task) = start(runtime(), Fake::default(), shutdown);
    ehlo(&mut c).await;
    assert!(c.cmd("MAIL FROM:<a@x.test>").await.starts_with("250 "));
    stop.send(Stop::Drain).unwrap();
    let quiet = c.reply_within(Duration::from_millis(200)).await;
    assert_eq!(quiet, Err(()));
    assert!(c.cmd("RCPT TO:<b@y.test>").await.starts_with("250 "));
    // RSET ends the transaction: the session is idle, and closed.
    assert!(c.cmd("RSET").await.starts_with("250 "));
    let reply = c.reply().await.unwrap();
    assert_eq!(reply, "421 4.3.2 Service shutting down\r\n");
}

#[tokio::test]
async fn when_the_grace_period_ends_a_transaction_in_progress_is_closed_too() {
    let (stop, shutdown) = stage();
    let (mut c, task) = start(runtime(), Fake::default(), shutdown);
    into_data(&mut c).await;
    stop.send(Stop::Drain).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send(Stop::Now).unwrap();
    assert_eq!(
        c.reply().await.unwrap(),
        "421 4.3.2 Service shutting down\r\n"
    );
    assert_eq!(c.reply().await, None);
    let calls = task.await.unwrap().calls;
    assert!(calls.iter().all(|c| !c.starts_with("message")), "{calls:?}");
}

#[tokio::test]
async fn a_server_gone_closes_its_sessions() {
    let (stop, shutdown) = stage();
    let (mut c, _task) = start(runtime(), Fake::default(), shutdown);
    into_data(&mut c).await;
    drop(stop);
    let reply = c.reply().await.unwrap();
    assert_eq!(reply, "421 4.3.2 Service shutting down\r\n");
}

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
