//! The relay end to end in one process: the real `Server` on port 0 (configuration written to a
//! temporary folder, key store seeded from keys/demo) in front of the built-in TLS sink
//! (`sealgate::cli::sink`, as the demo runs it), spoken to by a small SMTP client over TCP.
//! Every test asserts what the client is told and what arrives at the sink.
//!
//! Sealed copies are opened with `openssl cms` (as the interop tests do).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use sealgate::cli::keys::{self, KeysCommand};
use sealgate::config::Config;
use sealgate::serve::listener::Server;

/// A message sent as is: nobody@plain.test has no key, the sender no signing identity.
const PLAIN: &[u8] = b"From: Nobody <nobody@x.test>\r\n\
To: b@plain.test\r\n\
Subject: in process\r\n\
Message-ID: <inprocess-1@x.test>\r\n\
\r\n\
First line of the secret body.\r\n\
.a line that starts with a dot\r\n\
\r\n\
Last line.\r\n";

/// The keys/demo certificate of alice@example.test and its private key (to open her copy).
fn demo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("keys/demo")
        .join(name)
}

/// A proxy in front of a sink, each in this process, with their own folder.
struct Rig {
    dir: tempfile::TempDir,
    proxy: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl Rig {
    /// Starts a sink and a proxy whose configuration has `limits` in its [limits] section.
    async fn start(limits: &str) -> Rig {
        Rig::start_with(limits, &[]).await
    }

    /// As [`Rig::start`], with `before` listed ahead of the sink in `[upstream] address`
    /// (tried first, in order); without them the address is a single string.
    async fn start_with(limits: &str, before: &[String]) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = spawn_sink(&dir.path().join("tls"), &dir.path().join("mail")).await;
        let address = if before.is_empty() {
            format!("{:?}", sink.to_string())
        } else {
            let mut all = before.to_vec();
            all.push(sink.to_string());
            format!("{all:?}")
        };
        let config = format!(
            r#"[server]
hostname = "proxy.test"
[store]
path = "store"
[policy]
encrypt = "opportunistic"
sign = true
[[policy.rule]]
match = "required.test"
encrypt = "required"
[[listen]]
address = "127.0.0.1:0"
tls = "none"
[upstream]
address = {address}
tls = "starttls"
ca_file = "tls/ca.pem"
server_name = "localhost"
forward_client = "none"
[limits]
{limits}
"#
        );
        let config = Config::parse(&config, dir.path()).expect("configuration");
        let import = KeysCommand::Import {
            private: false,
            passphrase_file: None,
            json: false,
            files: vec![demo("alice-smime.pem")],
        };
        let imported = keys::run(
            import,
            &config.store_path,
            None,
            std::time::SystemTime::now(),
        );
        assert_eq!(imported, std::process::ExitCode::SUCCESS, "key import");
        let server = Server::bind(&config).await.expect("bind");
        let proxy = server.local_addrs()[0].0;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Rig {
            dir,
            proxy,
            stop: Some(stop),
            server,
        }
    }

    async fn client(&self) -> Client {
        let tcp = TcpStream::connect(self.proxy).await.expect("connect");
        let mut c = Client {
            tcp,
            buf: Vec::new(),
        };
        let greeting = c.reply().await.expect("greeting");
        assert!(greeting.starts_with("220 proxy.test "), "{greeting}");
        c
    }

    /// What the sink received, in order: (envelope lines, content).
    fn received(&self) -> Vec<(String, Vec<u8>)> {
        let mail = self.dir.path().join("mail");
        let mut out = Vec::new();
        for n in 1.. {
            let Ok(content) = std::fs::read(mail.join(format!("{n}.eml"))) else {
                break;
            };
            let envelope = std::fs::read_to_string(mail.join(format!("{n}.envelope")))
                .expect("envelope beside the message");
            out.push((envelope, content));
        }
        out
    }

    /// Signals shutdown (as SIGTERM does).
    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A TLS sink with a throwaway PKI made in `tls` (its CA is `tls/ca.pem`), writing what it
/// receives to `mail`.
async fn spawn_sink(tls: &Path, mail: &Path) -> SocketAddr {
    sealgate::cli::demo::make_pki(tls).expect("throwaway PKI");
    std::fs::create_dir(mail).expect("mail folder");
    let acceptor = tokio_rustls::TlsAcceptor::from(
        sealgate::config::tls::server_config(&tls.join("server.pem"), &tls.join("server.key"))
            .expect("sink TLS"),
    );
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let (sink, _count, _task) = sealgate::cli::sink::spawn(
        any,
        sealgate::cli::sink::runtime(acceptor),
        Some(mail.to_path_buf()),
        None,
    )
    .await
    .expect("sink");
    sink
}

/// A small SMTP client that reads whole replies.
struct Client {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// The next complete reply; None when the connection closes first.
    async fn reply(&mut self) -> Option<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = reply_end(&self.buf) {
                let reply: Vec<u8> = self.buf.drain(..end).collect();
                return Some(String::from_utf8_lossy(&reply).into_owned());
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk));
            match read.await.expect("a reply within 10 s") {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("send");
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await.expect("a reply")
    }

    /// Sends `message` (dot-stuffed) after DATA; the reply to its end.
    async fn data(&mut self, message: &[u8]) -> String {
        let go = self.cmd("DATA").await;
        assert!(go.starts_with("354 "), "{go}");
        self.send(&dot_stuff(message)).await;
        self.send(b".\r\n").await;
        self.reply().await.expect("a reply to the end of data")
    }

    /// EHLO, MAIL, each RCPT (all expected to be accepted) and the message: the final reply.
    async fn transaction(&mut self, from: &str, to: &[&str], message: &[u8]) -> String {
        let ehlo = self.cmd("EHLO client.test").await;
        assert!(ehlo.starts_with("250-proxy.test\r\n"), "{ehlo}");
        let mail = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        assert!(mail.starts_with("250 "), "{mail}");
        for rcpt in to {
            let reply = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            assert!(reply.starts_with("250 "), "RCPT {rcpt}: {reply}");
        }
        self.data(message).await
    }
}

/// The length of the first complete reply in `buf`.
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

fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Opens an S/MIME enveloped message with alice@example.test's key (`openssl cms -decrypt`).
fn open_for_alice(sealed: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("sealed.eml");
    std::fs::write(&input, sealed).expect("write");
    let out = Command::new("openssl")
        .args(["cms", "-decrypt", "-in"])
        .arg(&input)
        .arg("-recip")
        .arg(demo("alice-smime.pem"))
        .arg("-inkey")
        .arg(demo("alice-smime.key"))
        .output()
        .expect("run openssl (the interop tests need it too)");
    assert!(
        out.status.success(),
        "openssl cms -decrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test]
async fn a_message_without_keys_is_delivered_byte_identical() {
    let rig = Rig::start("").await;
    let mut c = rig.client().await;
    let reply = c
        .transaction("nobody@x.test", &["b@plain.test"], PLAIN)
        .await;
    assert!(reply.starts_with("250 "), "{reply}");
    assert!(c.cmd("QUIT").await.starts_with("221 "));
    let got = rig.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].0,
        "MAIL FROM:<nobody@x.test>\nRCPT TO:<b@plain.test>\n"
    );
    assert_eq!(got[0].1, PLAIN, "content byte for byte");
}

#[tokio::test]
async fn a_recipient_that_requires_encryption_without_a_key_is_refused_at_rcpt() {
    let rig = Rig::start("").await;
    let mut c = rig.client().await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250-"));
    assert!(c.cmd("MAIL FROM:<nobody@x.test>").await.starts_with("250 "));
    let refused = c.cmd("RCPT TO:<carol@required.test>").await;
    assert!(refused.starts_with("550 5.7.1 "), "{refused}");
    // The transaction goes on for the others; only they get the message.
    assert!(c.cmd("RCPT TO:<b@plain.test>").await.starts_with("250 "));
    assert!(c.data(PLAIN).await.starts_with("250 "));
    let got = rig.received();
    assert_eq!(got.len(), 1);
    assert!(!got[0].0.contains("required.test"), "{}", got[0].0);
}

#[tokio::test]
async fn a_recipient_with_a_certificate_gets_a_sealed_smime_copy() {
    let rig = Rig::start("").await;
    let mut c = rig.client().await;
    let reply = c
        .transaction("nobody@x.test", &["alice@example.test"], PLAIN)
        .await;
    assert!(reply.starts_with("250 "), "{reply}");
    let got = rig.received();
    assert_eq!(got.len(), 1);
    let (envelope, sealed) = &got[0];
    assert!(
        envelope.ends_with("RCPT TO:<alice@example.test>\n"),
        "{envelope}"
    );
    let text = String::from_utf8_lossy(sealed);
    assert!(
        text.contains("application/pkcs7-mime") && text.contains("enveloped-data"),
        "{text}"
    );
    assert!(
        !contains(sealed, b"secret body"),
        "no clear text at the sink"
    );
    let opened = open_for_alice(sealed);
    assert!(contains(&opened, b"First line of the secret body."));
    assert!(contains(&opened, b"Last line."));
}

#[tokio::test]
async fn one_encrypted_and_one_plain_recipient_give_one_copy_each() {
    let rig = Rig::start("").await;
    let mut c = rig.client().await;
    let to = ["alice@example.test", "b@plain.test"];
    let reply = c.transaction("nobody@x.test", &to, PLAIN).await;
    assert!(reply.starts_with("250 "), "{reply}");
    let mut got = rig.received();
    assert_eq!(got.len(), 2, "one sink message per copy");
    got.sort_by_key(|(envelope, _)| envelope.contains("alice@"));
    let (plain_env, plain) = &got[0];
    let (sealed_env, sealed) = &got[1];
    assert!(
        plain_env.ends_with("\nRCPT TO:<b@plain.test>\n"),
        "{plain_env}"
    );
    assert!(
        sealed_env.ends_with("\nRCPT TO:<alice@example.test>\n"),
        "{sealed_env}"
    );
    assert_eq!(plain, PLAIN);
    assert!(!contains(sealed, b"secret body"));
    assert!(contains(
        &open_for_alice(sealed),
        b"First line of the secret body."
    ));
}

#[tokio::test]
async fn rset_leaves_nothing_of_the_first_transaction() {
    let rig = Rig::start("").await;
    let mut c = rig.client().await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250-"));
    assert!(c.cmd("MAIL FROM:<first@x.test>").await.starts_with("250 "));
    assert!(c
        .cmd("RCPT TO:<first@plain.test>")
        .await
        .starts_with("250 "));
    assert!(c.cmd("RSET").await.starts_with("250 "));
    assert!(c.cmd("MAIL FROM:<second@x.test>").await.starts_with("250 "));
    assert!(c
        .cmd("RCPT TO:<second@plain.test>")
        .await
        .starts_with("250 "));
    let second = PLAIN.to_vec();
    assert!(c.data(&second).await.starts_with("250 "));
    let got = rig.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].0,
        "MAIL FROM:<second@x.test>\nRCPT TO:<second@plain.test>\n"
    );
    assert!(!got[0].0.contains("first@"));
    assert_eq!(got[0].1, second);
}

#[tokio::test]
async fn the_size_limit_is_announced_and_enforced() {
    let rig = Rig::start("max_message_size = 4096\nmax_sealing_memory = 1048576").await;
    let mut c = rig.client().await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.contains("250-SIZE 4096\r\n"), "{ehlo}");
    // Declared too big: refused at MAIL.
    let mail = c.cmd("MAIL FROM:<nobody@x.test> SIZE=5000").await;
    assert!(mail.starts_with("552 5.3.4 "), "{mail}");
    // Undeclared and too big: refused at the end of the content, nothing relayed.
    assert!(c.cmd("MAIL FROM:<nobody@x.test>").await.starts_with("250 "));
    assert!(c.cmd("RCPT TO:<b@plain.test>").await.starts_with("250 "));
    let mut big = PLAIN.to_vec();
    while big.len() <= 4096 {
        big.extend_from_slice(b"padding padding padding padding padding padding padding\r\n");
    }
    let reply = c.data(&big).await;
    assert!(reply.starts_with("552 5.3.4 "), "{reply}");
    // A message within the limit still goes through on the same connection.
    assert!(c.cmd("MAIL FROM:<nobody@x.test>").await.starts_with("250 "));
    assert!(c.cmd("RCPT TO:<b@plain.test>").await.starts_with("250 "));
    assert!(c.data(PLAIN).await.starts_with("250 "));
    let got = rig.received();
    assert_eq!(got.len(), 1, "only the message within the limit");
    assert_eq!(got[0].1, PLAIN);
}

#[tokio::test]
async fn at_shutdown_idle_clients_get_421_and_a_message_in_flight_completes() {
    let mut rig = Rig::start("shutdown_grace = 10").await;
    let mut idle = rig.client().await;
    assert!(idle.cmd("EHLO idle.test").await.starts_with("250-"));
    let mut busy = rig.client().await;
    assert!(busy.cmd("EHLO busy.test").await.starts_with("250-"));
    assert!(busy
        .cmd("MAIL FROM:<nobody@x.test>")
        .await
        .starts_with("250 "));
    assert!(busy.cmd("RCPT TO:<b@plain.test>").await.starts_with("250 "));
    assert!(busy.cmd("DATA").await.starts_with("354 "));
    let stuffed = dot_stuff(PLAIN);
    busy.send(&stuffed[..40]).await;
    let started = Instant::now();
    rig.shut_down();
    assert_eq!(
        idle.reply().await.as_deref(),
        Some("421 4.3.2 Service shutting down\r\n")
    );
    assert_eq!(idle.reply().await, None, "and closed");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "at once, not after the grace period"
    );
    // No new connections...
    let deadline = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(rig.proxy).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...but the message in flight is relayed, then its session is closed as idle.
    busy.send(&stuffed[40..]).await;
    busy.send(b".\r\n").await;
    let done = busy.reply().await.expect("final reply");
    assert!(done.starts_with("250 "), "{done}");
    let last = busy.reply().await;
    assert_eq!(last.as_deref(), Some("421 4.3.2 Service shutting down\r\n"));
    tokio::time::timeout(Duration::from_secs(5), &mut rig.server)
        .await
        .expect("run ends once no session is left, well before the grace period")
        .expect("server task");
    let got = rig.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, PLAIN);
}

#[tokio::test]
async fn a_transaction_still_open_when_the_grace_period_ends_gets_421() {
    let mut rig = Rig::start("shutdown_grace = 1").await;
    let mut busy = rig.client().await;
    assert!(busy.cmd("EHLO busy.test").await.starts_with("250-"));
    assert!(busy
        .cmd("MAIL FROM:<nobody@x.test>")
        .await
        .starts_with("250 "));
    assert!(busy.cmd("RCPT TO:<b@plain.test>").await.starts_with("250 "));
    assert!(busy.cmd("DATA").await.starts_with("354 "));
    busy.send(b"Subject: never finished\r\n").await;
    let started = Instant::now();
    rig.shut_down();
    let reply = busy.reply().await;
    assert_eq!(
        reply.as_deref(),
        Some("421 4.3.2 Service shutting down\r\n")
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "at the end of the grace period: {waited:?}"
    );
    assert_eq!(busy.reply().await, None);
    tokio::time::timeout(Duration::from_secs(5), &mut rig.server)
        .await
        .expect("run ends")
        .expect("server task");
    assert!(rig.received().is_empty(), "nothing relayed");
}

/// A local port nothing listens on (bound, then closed): connecting is refused.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("local address");
    drop(listener);
    address.to_string()
}

#[tokio::test]
async fn an_upstream_that_refuses_connections_is_skipped_for_the_next() {
    let rig = Rig::start_with("", &[closed_port()]).await;
    let mut c = rig.client().await;
    let reply = c
        .transaction("nobody@x.test", &["b@plain.test"], PLAIN)
        .await;
    assert!(reply.starts_with("250 "), "{reply}");
    let got = rig.received();
    assert_eq!(got.len(), 1, "delivered to the second address");
    assert_eq!(got[0].1, PLAIN);
}

#[tokio::test]
async fn an_upstream_with_an_untrusted_certificate_is_never_sent_the_message() {
    // A sink whose certificate chains to a CA of its own, not to the proxy's ca_file.
    let other = tempfile::tempdir().expect("tempdir");
    let untrusted_mail = other.path().join("mail");
    let untrusted = spawn_sink(&other.path().join("tls"), &untrusted_mail).await;
    let rig = Rig::start_with("", &[closed_port(), untrusted.to_string()]).await;
    let mut c = rig.client().await;
    let reply = c
        .transaction("nobody@x.test", &["b@plain.test"], PLAIN)
        .await;
    assert!(reply.starts_with("250 "), "{reply}");
    assert_eq!(rig.received().len(), 1, "delivered to the third address");
    let at_untrusted = std::fs::read_dir(&untrusted_mail)
        .expect("mail folder")
        .count();
    assert_eq!(at_untrusted, 0, "nothing reached the untrusted upstream");
}
