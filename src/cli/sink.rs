//! A local SMTP sink: accepts every message and writes it to a folder (`N.eml`, with its
//! envelope in `N.envelope`). It is the built-in TLS upstream of `sealgate demo` and of the
//! benchmarks; it is not a mail server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::serve::driver::{self, Backend, ListenerRuntime, Shutdown};
use crate::smtp::command::PathWithParams;
use crate::smtp::spool::Spool;
use crate::smtp::{Reply, Secret, SessionConfig, UpstreamFeatures};

/// Told the path of every message written (the demo prints how to open it).
pub type Notify = tokio::sync::mpsc::UnboundedSender<PathBuf>;

pub struct FolderBackend {
    dir: Option<Arc<PathBuf>>,
    counter: Arc<AtomicU64>,
    envelope: Vec<String>,
    notify: Option<Notify>,
}

impl FolderBackend {
    /// `dir = None` discards messages after counting them (for benchmarks).
    pub fn new(dir: Option<Arc<PathBuf>>, counter: Arc<AtomicU64>, notify: Option<Notify>) -> Self {
        FolderBackend {
            dir,
            counter,
            envelope: Vec::new(),
            notify,
        }
    }
}

impl Backend for FolderBackend {
    async fn features(&mut self, _name: &str, _esmtp: bool) -> UpstreamFeatures {
        UpstreamFeatures {
            size: None,
            eightbitmime: true,
            smtputf8: true,
            dsn: true,
            auth: Vec::new(),
        }
    }

    async fn mail(&mut self, path: &PathWithParams) -> Reply {
        self.envelope = vec![format!("MAIL FROM:{}", path.wire())];
        Reply::new(250, "2.1.0", "OK")
    }

    async fn rcpt(&mut self, path: &PathWithParams) -> Reply {
        self.envelope.push(format!("RCPT TO:{}", path.wire()));
        Reply::new(250, "2.1.5", "OK")
    }

    async fn message(&mut self, content: Spool) -> Reply {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let Some(dir) = &self.dir else {
            return Reply::new(250, "2.0.0", format!("Discarded as message {n}"));
        };
        let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || content.into_bytes()).await else {
            return Reply::new(451, "4.3.0", "Local error reading message");
        };
        let envelope = self.envelope.join("\n") + "\n";
        let eml = dir.join(format!("{n}.eml"));
        let env = dir.join(format!("{n}.envelope"));
        let written = tokio::fs::write(&env, envelope)
            .await
            .and(tokio::fs::write(&eml, bytes).await);
        match written {
            Ok(()) => {
                if let Some(notify) = &self.notify {
                    let _ = notify.send(eml.clone());
                }
                Reply::new(250, "2.0.0", format!("Stored as message {n}"))
            }
            Err(_) => Reply::new(451, "4.3.0", "Local error storing message"),
        }
    }

    async fn reset(&mut self) {
        self.envelope.clear();
    }

    async fn auth(&mut self, _line: &Secret) -> Reply {
        Reply::new(502, "5.5.1", "AUTH not available")
    }

    async fn close(&mut self) {}
}

/// The sink's listener settings: STARTTLS with `acceptor`, required before MAIL (the relay's
/// forced TLS is what the sink stands in for), and generous timeouts.
pub fn runtime(acceptor: TlsAcceptor) -> ListenerRuntime {
    ListenerRuntime {
        session: SessionConfig {
            hostname: "sink.localhost".into(),
            starttls: true,
            require_tls: true,
            ..SessionConfig::default()
        },
        acceptor: Some(acceptor),
        implicit_tls: false,
        command_timeout: Duration::from_secs(300),
        data_timeout: Duration::from_secs(300),
        handshake_timeout: Duration::from_secs(30),
        memory_spool: 1024 * 1024,
        spool_dir: None,
        sign_without_auth: false,
        allow_from: None,
        proxy: None,
        session_timeout: Duration::from_secs(3600),
        min_data_rate: 0,
        data_rate_window: Duration::from_secs(30),
    }
}

/// Serves the sink on `listener` until the process ends.
pub async fn run(
    listener: TcpListener,
    rt: Arc<ListenerRuntime>,
    dir: Option<Arc<PathBuf>>,
    counter: Arc<AtomicU64>,
    notify: Option<Notify>,
) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let rt = rt.clone();
        let dir = dir.clone();
        let counter = counter.clone();
        let notify = notify.clone();
        tokio::spawn(async move {
            let id = driver::session_id();
            let _ = tcp.set_nodelay(true);
            let mut backend = FolderBackend::new(dir, counter, notify);
            driver::serve(tcp, peer, rt, &mut backend, &id, Shutdown::never()).await;
        });
    }
}

/// Binds a sink; returns its address and the task serving it.
pub async fn spawn(
    address: SocketAddr,
    rt: ListenerRuntime,
    dir: Option<PathBuf>,
    notify: Option<Notify>,
) -> std::io::Result<(SocketAddr, Arc<AtomicU64>, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    // Continue the numbering of a folder used before rather than overwrite its messages.
    let existing = dir
        .as_ref()
        .and_then(|d| std::fs::read_dir(d).ok())
        .map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    e.path()
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .and_then(|s| s.parse::<u64>().ok())
                })
                .max()
                .unwrap_or(0)
        });
    let counter = Arc::new(AtomicU64::new(existing));
    let task = tokio::spawn(run(
        listener,
        Arc::new(rt),
        dir.map(Arc::new),
        counter.clone(),
        notify,
    ));
    Ok((local, counter, task))
}
