//! Connecting to the upstream, as a sequence of typed states:
//! `Greeted` (plaintext or implicit TLS) -> `Capable` (EHLO done) -> (STARTTLS) -> `Ready`
//! ([`super::session`]). Only a `Capable` session under verified TLS becomes `Ready`, and only
//! a `Ready` session can carry a transaction: there is no way to send MAIL over plaintext.
//! The configured addresses are tried in order until one gives a `Ready` session (failover).

use std::sync::Arc;
use std::time::Instant;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::conn::Conn;
use super::error::{Phase, UpstreamError};
use super::identity::{ClientIdentity, ForwardClient};
use super::session::Ready;
use crate::config::{Limits, UpstreamConfig, UpstreamTarget, UpstreamTls};
use crate::smtp::Reply;

/// Opens verified TLS sessions to the configured upstream.
pub struct Connector {
    cfg: UpstreamConfig,
    tls: TlsConnector,
    /// Each address with the name its certificate must carry, in the order they are tried.
    targets: Vec<(UpstreamTarget, ServerName<'static>)>,
    limits: Limits,
}

impl Connector {
    pub fn new(cfg: UpstreamConfig, limits: Limits) -> Result<Self, UpstreamError> {
        let targets = cfg
            .targets
            .iter()
            .map(|t| {
                ServerName::try_from(t.server_name.clone())
                    .map(|name| (t.clone(), name))
                    .map_err(|e| UpstreamError::Certificate(format!("invalid server name: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err(UpstreamError::Connect(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no upstream address",
            )));
        }
        let tls = TlsConnector::from(Arc::clone(&cfg.client_tls));
        Ok(Connector {
            cfg,
            tls,
            targets,
            limits,
        })
    }

    pub fn forward_client(&self) -> ForwardClient {
        self.cfg.forward_client
    }

    /// Connects, secures and greets the upstream, then tells it who the client is (XCLIENT,
    /// when `forward_client = "xclient"`); returns a session ready for a transaction.
    /// `client` is None only for mail sealgate writes itself (delivery status notifications):
    /// then the upstream rightly sees sealgate as the client.
    ///
    /// The addresses are tried in order: any failure before the session is ready (connect,
    /// timeout, STARTTLS, certificate, greeting, EHLO, XCLIENT) is logged with the address and
    /// the next one is tried; nothing of the transaction has been sent yet. When every address
    /// failed, the error is the last address's.
    pub async fn connect(&self, client: Option<&ClientIdentity>) -> Result<Ready, UpstreamError> {
        let mut last = None;
        for (target, name) in &self.targets {
            match self.connect_to(target, name, client).await {
                Ok(ready) => return Ok(ready),
                Err(e) => {
                    tracing::warn!(upstream = %target, error = %e, "upstream address failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(UpstreamError::Closed(Phase::Connect)))
    }

    /// One address: TCP, TLS verified against `name`, greeting, EHLO, XCLIENT.
    async fn connect_to(
        &self,
        target: &UpstreamTarget,
        name: &ServerName<'static>,
        client: Option<&ClientIdentity>,
    ) -> Result<Ready, UpstreamError> {
        let started = Instant::now();
        let tcp = tokio::time::timeout(
            self.limits.connect_timeout,
            TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| UpstreamError::Timeout(Phase::Connect))?
        .map_err(UpstreamError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let mut ready = match self.cfg.tls {
            UpstreamTls::Implicit => {
                let tls = self.handshake(tcp, name).await?;
                Greeted::read(Conn::new(tls, self.limits.upstream_timeout))
                    .await?
                    .ehlo(&self.cfg.helo_name)
                    .await?
                    .into_ready()
            }
            UpstreamTls::Starttls => {
                let plain = Greeted::read(Conn::new(tcp, self.limits.upstream_timeout))
                    .await?
                    .ehlo(&self.cfg.helo_name)
                    .await?;
                let tcp = plain.starttls().await?;
                let tls = self.handshake(tcp, name).await?;
                Greeted::skip(Conn::new(tls, self.limits.upstream_timeout))
                    .ehlo(&self.cfg.helo_name)
                    .await?
                    .into_ready()
            }
        };
        ready.set_forward(self.cfg.forward_client);
        if let (ForwardClient::Xclient, Some(client)) = (self.cfg.forward_client, client) {
            ready.xclient(client).await?;
        }
        tracing::debug!(
            upstream = %target,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "upstream session ready"
        );
        Ok(ready)
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        name: &ServerName<'static>,
    ) -> Result<TlsStream<TcpStream>, UpstreamError> {
        let connecting = self.tls.connect(name.clone(), tcp);
        match tokio::time::timeout(self.limits.connect_timeout, connecting).await {
            Err(_) => Err(UpstreamError::Timeout(Phase::Handshake)),
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(classify_tls_error(e)),
        }
    }
}

fn classify_tls_error(e: std::io::Error) -> UpstreamError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(why)) => {
            UpstreamError::Certificate(format!("{why:?}"))
        }
        Some(other) => UpstreamError::Handshake(other.to_string()),
        None => UpstreamError::Handshake(e.to_string()),
    }
}

/// The upstream greeted us (or, after STARTTLS, is about to be greeted again with EHLO).
struct Greeted<S> {
    conn: Conn<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Greeted<S> {
    async fn read(mut conn: Conn<S>) -> Result<Self, UpstreamError> {
        let reply = conn.read_reply(Phase::Greeting).await?;
        if reply.code() != 220 {
            return Err(UpstreamError::Refused {
                phase: Phase::Greeting,
                reply,
            });
        }
        Ok(Greeted { conn })
    }

    /// After STARTTLS there is no new greeting (RFC 3207).
    fn skip(conn: Conn<S>) -> Self {
        Greeted { conn }
    }

    async fn ehlo(mut self, name: &str) -> Result<Capable<S>, UpstreamError> {
        let reply = self
            .conn
            .command(format!("EHLO {name}").as_bytes(), Phase::Ehlo)
            .await?;
        if reply.code() != 250 {
            return Err(UpstreamError::Refused {
                phase: Phase::Ehlo,
                reply,
            });
        }
        Ok(Capable {
            conn: self.conn,
            extensions: Extensions::parse(&reply),
        })
    }
}

/// An EHLO (or HELO) that is not the first of the session: after XCLIENT.
pub(super) async fn greet_again<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    name: &str,
    esmtp: bool,
) -> Result<Extensions, UpstreamError> {
    let verb = if esmtp { "EHLO" } else { "HELO" };
    let reply = conn
        .command(format!("{verb} {name}").as_bytes(), Phase::Ehlo)
        .await?;
    if reply.code() != 250 {
        return Err(UpstreamError::Refused {
            phase: Phase::Ehlo,
            reply,
        });
    }
    Ok(if esmtp {
        Extensions::parse(&reply)
    } else {
        Extensions::default()
    })
}

/// EHLO done.
struct Capable<S> {
    conn: Conn<S>,
    extensions: Extensions,
}

impl Capable<TcpStream> {
    /// Asks for STARTTLS and hands back the raw stream for the handshake. Anything the server
    /// sent after its 220 would be read as if it came over TLS: that aborts (SECURITY.md I2).
    async fn starttls(mut self) -> Result<TcpStream, UpstreamError> {
        if !self.extensions.starttls {
            return Err(UpstreamError::NoStartTls);
        }
        let reply = self.conn.command(b"STARTTLS", Phase::StartTls).await?;
        if reply.code() != 220 {
            return Err(UpstreamError::StartTlsRefused(reply));
        }
        if self.conn.buffered() > 0 {
            return Err(UpstreamError::InjectedAfterStartTls);
        }
        Ok(self.conn.into_inner())
    }
}

impl Capable<TlsStream<TcpStream>> {
    /// Only a session under verified TLS becomes [`Ready`].
    fn into_ready(self) -> Ready {
        Ready::new(self.conn, self.extensions)
    }
}

#[cfg(test)]
impl<S: AsyncRead + AsyncWrite + Unpin> Capable<S> {
    /// Tests drive the transaction states over an in-memory stream.
    fn into_ready_for_test(self) -> Ready<S> {
        Ready::new(self.conn, self.extensions)
    }
}

/// A session over `stream` (a test's in-memory pipe): greeting and EHLO, no TLS.
#[cfg(test)]
pub(crate) async fn test_session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
) -> Result<Ready<S>, UpstreamError> {
    let conn = Conn::new(stream, std::time::Duration::from_secs(5));
    Ok(Greeted::read(conn)
        .await?
        .ehlo("test.localhost")
        .await?
        .into_ready_for_test())
}

/// What the upstream announced in EHLO.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    pub starttls: bool,
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub pipelining: bool,
    pub auth: Vec<String>,
    /// The XCLIENT attributes offered (upper case); None: no XCLIENT.
    pub xclient: Option<Vec<String>>,
    /// The XFORWARD attributes offered (upper case); None: no XFORWARD.
    pub xforward: Option<Vec<String>>,
}

impl Extensions {
    pub fn parse(reply: &Reply) -> Self {
        let mut ext = Extensions::default();
        for line in reply.lines().iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "STARTTLS" => ext.starttls = true,
                "SIZE" => ext.size = Some(words.next().and_then(|w| w.parse().ok()).unwrap_or(0)),
                "8BITMIME" => ext.eightbitmime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "DSN" => ext.dsn = true,
                "PIPELINING" => ext.pipelining = true,
                "XCLIENT" => ext.xclient = Some(words.map(str::to_ascii_uppercase).collect()),
                "XFORWARD" => ext.xforward = Some(words.map(str::to_ascii_uppercase).collect()),
                "AUTH" => {
                    for m in words.map(str::to_ascii_uppercase) {
                        if matches!(m.as_str(), "PLAIN" | "LOGIN") && !ext.auth.contains(&m) {
                            ext.auth.push(m);
                        }
                    }
                }
                _ => {}
            }
        }
        ext
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::ReplyParser;

    #[test]
    fn parses_ehlo_extensions() {
        let wire = b"250-mx.test\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-STARTTLS\r\n250-AUTH LOGIN PLAIN CRAM-MD5\r\n250-DSN\r\n250 SMTPUTF8\r\n";
        let (reply, _) = ReplyParser::default().parse(wire).unwrap().unwrap();
        let ext = Extensions::parse(&reply);
        assert_eq!(
            ext,
            Extensions {
                starttls: true,
                size: Some(1000),
                eightbitmime: true,
                smtputf8: true,
                dsn: true,
                pipelining: false,
                auth: vec!["LOGIN".into(), "PLAIN".into()],
                xclient: None,
                xforward: None,
            }
        );
        let wire = b"250-mx.test\r\n250-XCLIENT NAME addr PROTO\r\n250 XFORWARD\r\n";
        let (reply, _) = ReplyParser::default().parse(wire).unwrap().unwrap();
        let ext = Extensions::parse(&reply);
        assert_eq!(
            ext.xclient,
            Some(vec!["NAME".into(), "ADDR".into(), "PROTO".into()])
        );
        assert_eq!(ext.xforward, Some(vec![]));
        // The first line is the server's name, not an extension.
        let (reply, _) = ReplyParser::default()
            .parse(b"250 STARTTLS\r\n")
            .unwrap()
            .unwrap();
        assert!(!Extensions::parse(&reply).starttls);
    }
}
