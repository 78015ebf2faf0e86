//! Listeners: bind, accept under a connection limit, hand each connection to the relay, and
//! stop gracefully (stop accepting, close idle sessions with 421, let transactions in flight
//! finish within a grace period).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ListenerConfig, ListenerTls};
use crate::queue::Queue;
use crate::serve::driver::{self, ListenerRuntime, Shutdown, Stop};
use crate::serve::proxy_protocol;
use crate::serve::relay::{MemoryBudget, Pipeline, RelayBackend};
use crate::smtp::SessionConfig;
use crate::store::StoreKeys;
use crate::transform::{KeySource, Settings};
use crate::upstream::Connector;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream: {0}")]
    Upstream(#[from] crate::upstream::UpstreamError),
    #[error("key store {path}: {message}")]
    Store { path: String, message: String },
    #[error("queue {path}: {source}")]
    Queue {
        path: String,
        source: std::io::Error,
    },
}

pub struct Server {
    listeners: Vec<(TcpListener, Arc<ListenerRuntime>)>,
    connector: Arc<Connector>,
    pipeline: Arc<Pipeline>,
    max_connections: usize,
    max_connections_per_ip: usize,
    grace: Duration,
    queue: Arc<Queue>,
    /// Our name and the upstream's, for DSNs.
    names: (String, String),
}

/// Connections per client address. A [`PeerSlot`] holds one and gives it back when dropped.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

struct PeerSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

impl Server {
    /// Binds the listeners and opens the key store named in the configuration.
    pub async fn bind(config: &Config) -> Result<Server, ServeError> {
        let store_error = |message: String| ServeError::Store {
            path: config.store_path.display().to_string(),
            message,
        };
        let keys = StoreKeys::open(
            config.store_path.clone(),
            config.smime_trust_anchors.as_deref(),
        )
        .map_err(|e| store_error(e.to_string()))?;
        keys.watch();
        Self::bind_with_keys(config, keys).await
    }

    /// Like [`Server::bind`] with another key source.
    pub async fn bind_with_keys(
        config: &Config,
        keys: Arc<dyn KeySource>,
    ) -> Result<Server, ServeError> {
        let queue = Queue::open(&config.queue).map_err(|source| ServeError::Queue {
            path: config.queue.dir.display().to_string(),
            source,
        })?;
        let pipeline = Arc::new(Pipeline {
            settings: Settings::new(&config.policy, config.limits.mime.clone()),
            keys,
            memory: MemoryBudget::new(config.limits.max_sealing_memory),
            queue: Some(queue.clone()),
        });
        let connector = Arc::new(Connector::new(
            config.upstream.clone(),
            config.limits.clone(),
        )?);
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let rt = listener_runtime(config, l);
            let listener =
                TcpListener::bind(l.address)
                    .await
                    .map_err(|source| ServeError::Bind {
                        address: l.address,
                        source,
                    })?;
            listeners.push((listener, Arc::new(rt)));
        }
        Ok(Server {
            listeners,
            connector,
            pipeline,
            max_connections: config.limits.max_connections,
            max_connections_per_ip: config.limits.max_connections_per_ip,
            grace: config.limits.shutdown_grace,
            queue,
            names: (
                config.hostname.clone(),
                config.upstream.primary().host.clone(),
            ),
        })
    }

    /// The bound addresses with their TLS mode, in configuration order.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, &'static str)> {
        self.listeners
            .iter()
            .filter_map(|(l, rt)| {
                let mode = if rt.implicit_tls {
                    "implicit"
                } else if rt.session.starttls {
                    "starttls"
                } else {
                    "none"
                };
                l.local_addr().ok().map(|a| (a, mode))
            })
            .collect()
    }

    /// Serves until `shutdown` completes. Then it stops accepting, closes idle sessions with
    /// 421 at once and gives the transactions in flight the grace period to finish; those
    /// still running after it are closed with 421 too.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (accepting_tx, accepting) = watch::channel(false);
        let (sessions_tx, sessions) = watch::channel(Stop::Running);
        let queue_task = tokio::spawn(self.queue.clone().run(
            self.connector.clone(),
            self.names.0.clone(),
            self.names.1.clone(),
            accepting.clone(),
        ));
        let shared = Arc::new(Shared {
            limit: Arc::new(Semaphore::new(self.max_connections)),
            per_ip: Arc::new(PerIp::default()),
            max_per_ip: self.max_connections_per_ip,
            connector: self.connector,
            pipeline: self.pipeline,
            sessions,
        });
        let mut accept_loops = JoinSet::new();
        for (listener, rt) in self.listeners {
            accept_loops.spawn(accept_loop(listener, rt, shared.clone(), accepting.clone()));
        }
        shutdown.await;
        tracing::info!("shutting down: no new connections; idle sessions closed, sessions in flight have limits.shutdown_grace to finish");
        let _ = accepting_tx.send(true);
        let _ = sessions_tx.send(Stop::Drain);
        while accept_loops.join_next().await.is_some() {}
        if !shared
            .sessions_ended(self.max_connections, self.grace)
            .await
        {
            tracing::warn!("grace period over; closing remaining sessions");
            let _ = sessions_tx.send(Stop::Now);
            if !shared.sessions_ended(self.max_connections, LAST_WORD).await {
                tracing::warn!("sessions still busy (upstream or sealing) are dropped");
            }
        }
        let _ = queue_task.await;
    }
}

/// How long sessions closed at the end of the grace period have to send their 421.
const LAST_WORD: Duration = Duration::from_secs(2);

/// What the connections of a running server share.
struct Shared {
    /// One permit per session (limits.max_connections).
    limit: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    max_per_ip: usize,
    connector: Arc<Connector>,
    pipeline: Arc<Pipeline>,
    /// The shutdown stage, as the sessions hear it.
    sessions: watch::Receiver<Stop>,
}

impl Shared {
    /// Waits up to `within` for every session to end: true when they all have.
    async fn sessions_ended(&self, max_connections: usize, within: Duration) -> bool {
        // Every session holds a permit: having them all back means every session has ended.
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        tokio::time::timeout(within, self.limit.acquire_many(all))
            .await
            .is_ok()
    }
}

/// Accepts connections on `listener` until `stop` changes, each under a place in
/// `limits.max_connections`.
async fn accept_loop(
    listener: TcpListener,
    rt: Arc<ListenerRuntime>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = shared.limit.clone().try_acquire_owned() else {
            tokio::spawn(refuse(tcp, peer, "Too many connections"));
            continue;
        };
        tokio::spawn(connection(tcp, peer, rt.clone(), shared.clone(), permit));
    }
}

/// One accepted connection: its PROXY header, `allow_from`, the per-address limit, then the
/// session with the relay. `_permit` is its place under `limits.max_connections`.
async fn connection(
    mut tcp: TcpStream,
    peer: SocketAddr,
    rt: Arc<ListenerRuntime>,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let id = driver::session_id();
    let _ = tcp.set_nodelay(true);
    tracing::debug!(session = %id, %peer, "connection");
    let Some((peer, local)) = client_addresses(&mut tcp, peer, &rt, &id).await else {
        return;
    };
    if let Some(allowed) = &rt.allow_from {
        if !allowed.contains(peer.ip()) {
            tracing::warn!(%peer, "connection refused: address not in allow_from");
            // 554 instead of the greeting (RFC 5321 3.1).
            let reply = format!(
                "554 5.7.1 {} No SMTP service for your address\r\n",
                rt.session.hostname
            );
            return turn_away(tcp, &reply).await;
        }
    }
    let Some(_slot) = shared.per_ip.acquire(peer.ip(), shared.max_per_ip) else {
        return refuse(tcp, peer, "Too many connections from your address").await;
    };
    let mut backend = RelayBackend::new(
        shared.connector.clone(),
        shared.pipeline.clone(),
        &id,
        rt.sign_without_auth,
        peer,
        local,
    );
    let shutdown = Shutdown::new(shared.sessions.clone());
    driver::serve(tcp, peer, rt, &mut backend, &id, shutdown).await;
}

/// The client's address and ours. Behind a load balancer, the client is the one its PROXY
/// header names: that address is what allow_from, the per-address limit, the logs and
/// XCLIENT/XFORWARD use. None: the connection is to be closed.
async fn client_addresses(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    rt: &ListenerRuntime,
    id: &str,
) -> Option<(SocketAddr, SocketAddr)> {
    let local = tcp.local_addr().unwrap_or(peer);
    let Some((version, from)) = &rt.proxy else {
        return Some((peer, local));
    };
    if !from.contains(peer.ip()) {
        tracing::warn!(session = %id, %peer, "connection closed: not in proxy_from");
        return None;
    }
    match proxy_protocol::read_header(tcp, *version, rt.handshake_timeout).await {
        Ok(h) => {
            let real = h.addresses.unwrap_or((peer, local));
            tracing::debug!(session = %id, proxy = %peer, client = %real.0, "PROXY header");
            Some(real)
        }
        Err(e) => {
            tracing::warn!(session = %id, proxy = %peer, error = %e, "connection closed: no valid PROXY header");
            None
        }
    }
}

/// The driver's settings for the listener `l`.
fn listener_runtime(config: &Config, l: &ListenerConfig) -> ListenerRuntime {
    // The TLS material was loaded when the configuration was validated.
    let acceptor = l.tls.server_config().cloned().map(TlsAcceptor::from);
    let implicit_tls = matches!(l.tls, ListenerTls::Implicit(_));
    let limits = &config.limits;
    ListenerRuntime {
        session: SessionConfig {
            hostname: config.hostname.clone(),
            max_command_line: limits.max_command_line,
            max_message_size: limits.max_message_size,
            max_recipients: limits.max_recipients,
            max_line_length: limits.max_line_length,
            starttls: matches!(l.tls, ListenerTls::Starttls(_)),
            implicit_tls,
            require_tls: l.require_tls,
            max_errors: limits.max_errors,
            max_junk_commands: limits.max_junk_commands,
        },
        acceptor,
        implicit_tls,
        command_timeout: limits.command_timeout,
        data_timeout: limits.data_timeout,
        handshake_timeout: limits.command_timeout.min(Duration::from_secs(60)),
        memory_spool: limits.memory_spool,
        sign_without_auth: l.sign_without_auth,
        allow_from: l.allow_from.clone(),
        proxy: l.proxy.clone(),
        session_timeout: limits.session_timeout,
        spool_dir: config.spool_dir.clone(),
        min_data_rate: limits.min_data_rate,
        data_rate_window: limits.data_rate_window,
    }
}

/// A connection over a limit: 421 instead of the greeting.
async fn refuse(tcp: TcpStream, peer: SocketAddr, why: &str) {
    tracing::warn!(%peer, reason = why, "connection refused");
    turn_away(tcp, &format!("421 4.7.0 {why}, try again later\r\n")).await;
}

/// Writes `reply` (within a few seconds) and closes the connection.
async fn turn_away(mut tcp: TcpStream, reply: &str) {
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(reply.as_bytes())).await;
    let _ = tcp.shutdown().await;
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
