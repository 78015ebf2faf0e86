//! Relay throughput over STARTTLS, a new connection per message, N concurrent sessions;
//! client -> sink directly vs client -> sealgate -> sink, measured in one run: 4 KB and 10 KB
//! without crypto, 10 KB S/MIME sign+encrypt (RSA-2048), 10 KB OpenPGP sign+encrypt (Ed25519).
//!
//!     cargo bench --bench relay -- [messages] [concurrency]
//!
//! Client, proxy and sink share this process and the machine's cores, so the figures are a
//! ratio, not an absolute capacity.

#[path = "../tests/common/keygen.rs"]
mod keygen;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealgate::config::{Config, Limits, UpstreamConfig, UpstreamTarget, UpstreamTls};
use sealgate::serve::listener::Server;
use sealgate::smtp::command::PathWithParams;
use sealgate::smtp::spool::Spool;
use sealgate::upstream::{Connector, Mail};

fn limits() -> Limits {
    Limits {
        max_message_size: 10 * 1024 * 1024,
        max_recipients: 100,
        max_connections: 10_000,
        max_command_line: 512,
        max_line_length: 1 << 20,
        max_errors: 20,
        command_timeout: Duration::from_secs(60),
        data_timeout: Duration::from_secs(60),
        upstream_timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(1),
        session_timeout: Duration::from_secs(3600),
        memory_spool: 1 << 20,
        mime: sealgate::mime::Limits::default(),
        // The benchmark's 32 sessions come from one address.
        max_connections_per_ip: 10_000,
        max_junk_commands: 100,
        min_data_rate: 0,
        data_rate_window: Duration::from_secs(30),
        max_sealing_memory: 4 << 30,
    }
}

fn client(addr: SocketAddr, ca: &Path) -> Connector {
    let cfg = UpstreamConfig {
        targets: vec![UpstreamTarget {
            host: addr.ip().to_string(),
            port: addr.port(),
            server_name: "localhost".into(),
        }],
        tls: UpstreamTls::Starttls,
        client_tls: sealgate::config::tls::client_config(Some(ca)).expect("client TLS config"),
        helo_name: "bench.localhost".into(),
        forward_client: sealgate::upstream::ForwardClient::None,
    };
    Connector::new(cfg, limits()).expect("connector")
}

fn message(from: &str, to: &str, size: usize) -> Vec<u8> {
    let mut m = format!("From: {from}\r\nTo: {to}\r\nSubject: bench\r\n\r\n").into_bytes();
    while m.len() < size {
        m.extend_from_slice(
            b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n",
        );
    }
    m.truncate(size - 2);
    m.extend_from_slice(b"\r\n");
    m
}

async fn load(
    target: Arc<Connector>,
    messages: usize,
    concurrency: usize,
    (from, to, size): (&'static str, &'static str, usize),
) -> (f64, usize) {
    let body = Arc::new(message(from, to, size));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (target, body, next, failures) =
            (target.clone(), body.clone(), next.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < messages {
                let ok = async {
                    let me = sealgate::upstream::ClientIdentity {
                        peer: "127.0.0.1:1".parse().ok()?,
                        local: "127.0.0.1:25".parse().ok()?,
                        helo: Some("bench.localhost".into()),
                        esmtp: true,
                        login: None,
                    };
                    let s = target.connect(Some(&me)).await.ok()?;
                    let from = PathWithParams {
                        address: from.into(),
                        params: vec![],
                    };
                    let to = PathWithParams {
                        address: to.into(),
                        params: vec![],
                    };
                    let Ok(Mail::Accepted(mut txn, _)) = s.mail(&from, Some(&me), "bench").await
                    else {
                        return None;
                    };
                    txn.rcpt(&to).await.ok().filter(|r| r.is_positive())?;
                    let mut spool = Spool::new(1 << 20, None);
                    spool.write(&body).ok()?;
                    let (s, reply) = txn.data(&mut spool).await.ok()?;
                    reply.is_positive().then_some(())?;
                    s.quit().await;
                    Some(())
                }
                .await;
                if ok.is_none() {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    (
        messages as f64 / secs,
        failures.load(std::sync::atomic::Ordering::Relaxed),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let messages: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let concurrency: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls_dir = dir.path().join("tls");
        keygen::generate("tls", &tls_dir);
        let ca = tls_dir.join("ca.pem");
        let sink_rt = sealgate::cli::sink::runtime(tokio_rustls::TlsAcceptor::from(
            sealgate::config::tls::server_config(&tls_dir.join("server.pem"), &tls_dir.join("server.key")).expect("sink tls"),
        ));
        // SEALGATE_BENCH_SINK_DIR=DIR keeps what the sink receives, to check what was measured.
        let keep = std::env::var_os("SEALGATE_BENCH_SINK_DIR").map(std::path::PathBuf::from);
        let (sink, count, _task) = sealgate::cli::sink::spawn("127.0.0.1:0".parse().expect("addr"), sink_rt, keep, None)
            .await
            .expect("sink");
        let config_text = format!(
            "[store]\npath = \"store\"\n[[listen]]\naddress = \"127.0.0.1:0\"\ntls = \"starttls\"\ncert = \"tls/server.pem\"\nkey = \"tls/server.key\"\nsign_without_auth = true\nallow_from = [\"127.0.0.1\"]\n[upstream]\naddress = \"{sink}\"\ntls = \"starttls\"\nca_file = \"tls/ca.pem\"\nserver_name = \"localhost\"\nforward_client = \"none\"\n[limits]\nmax_connections = 10000\n"
        );
        let config = Config::parse(&config_text, dir.path()).expect("config");
        // Seed the proxy's key store with the demo keys (RSA-2048 S/MIME, Ed25519 OpenPGP).
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys/demo");
        let f = |n: &str| demo.join(n);
        for (private, files) in [
            (false, vec![f("bob-rsa2048.pem"), f("peggy-ed25519.asc")]),
            (true, vec![f("alice-smime.pem"), f("alice-smime.key")]),
            (true, vec![f("alice-openpgp-secret.asc")]),
        ] {
            let cmd = sealgate::cli::keys::KeysCommand::Import { private, passphrase_file: None, json: false, files };
            let _ = sealgate::cli::keys::run(cmd, &dir.path().join("store"), None, std::time::SystemTime::now());
        }
        let server = Server::bind(&config).await.expect("bind");
        let proxy = server.local_addrs()[0].0;
        let (_stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async move {
            let _ = stop_rx.await;
        }));

        println!("STARTTLS on every hop, a new connection per message, {concurrency} sessions, {messages} messages per run");
        let direct = Arc::new(client(sink, &ca));
        let via = Arc::new(client(proxy, &ca));
        type Case = (&'static str, (&'static str, &'static str, usize));
        let cases: [Case; 4] = [
            ("4 KB, no crypto", ("nobody@bench.test", "b@bench.test", 4096)),
            ("10 KB, no crypto", ("nobody@bench.test", "b@bench.test", 10 * 1024)),
            ("10 KB, S/MIME sign+encrypt (RSA-2048)", ("alice@example.test", "bob@example.test", 10 * 1024)),
            ("10 KB, OpenPGP sign+encrypt (Ed25519)", ("alice@example.test", "peggy@example.test", 10 * 1024)),
        ];
        let _ = load(direct.clone(), 50, 4, cases[0].1).await;
        let _ = load(via.clone(), 50, 4, cases[0].1).await;
        for (label, case) in cases {
            let (d, df) = load(direct.clone(), messages, concurrency, case).await;
            let (p, pf) = load(via.clone(), messages, concurrency, case).await;
            println!(
                "{label:40} direct to sink {d:8.1} msg/s ({df} failed) | through sealgate {p:8.1} msg/s ({pf} failed) | ratio {:.2}",
                p / d
            );
        }
        println!("sink received {} messages in all", count.load(std::sync::atomic::Ordering::Relaxed));
    });
}
