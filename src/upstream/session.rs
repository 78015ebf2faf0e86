//! A secured, greeted upstream session and its transactions, as typed states:
//! `Ready` --MAIL accepted--> `InTransaction` --DATA or RSET--> `Ready`. RCPT and DATA exist
//! only inside a transaction; AUTH and XCLIENT only outside one. Generic over the stream so
//! the states can be driven in memory; in production only [`super::Connector`] makes a
//! `Ready`, and only over verified TLS.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::client::{greet_again, Extensions};
use super::conn::Conn;
use super::error::{Phase, UpstreamError};
use super::identity::{ClientIdentity, ForwardClient, IdentityError};
use crate::smtp::command::PathWithParams;
use crate::smtp::data::DotStuffer;
use crate::smtp::spool::Spool;
use crate::smtp::{Reply, ReplyError, Secret, UpstreamFeatures};

/// The upstream stream in production.
pub type Tls = TlsStream<TcpStream>;

/// A session that can open a transaction.
pub struct Ready<S = Tls> {
    conn: Conn<S>,
    extensions: Extensions,
    forward: ForwardClient,
}

/// A session inside a transaction (MAIL accepted).
pub struct InTransaction<S = Tls> {
    session: Ready<S>,
}

/// What MAIL did: opened a transaction, or was refused (the session stays ready).
pub enum Mail<S = Tls> {
    Accepted(InTransaction<S>, Reply),
    Refused(Ready<S>, Reply),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Ready<S> {
    pub(super) fn new(conn: Conn<S>, extensions: Extensions) -> Self {
        Ready {
            conn,
            extensions,
            forward: ForwardClient::None,
        }
    }

    pub(super) fn set_forward(&mut self, forward: ForwardClient) {
        self.forward = forward;
    }

    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// What the client may use through us.
    pub fn features(&self) -> UpstreamFeatures {
        UpstreamFeatures {
            size: self.extensions.size,
            eightbitmime: self.extensions.eightbitmime,
            smtputf8: self.extensions.smtputf8,
            dsn: self.extensions.dsn,
            auth: self.extensions.auth.clone(),
        }
    }

    /// XCLIENT with what we know of the client, then the new greeting and our EHLO (or HELO)
    /// with the client's name, which the upstream takes as the client's HELO. Not offered, or
    /// refused: an error (the caller answers 451 4.7.0 and sends nothing).
    pub(super) async fn xclient(&mut self, client: &ClientIdentity) -> Result<(), UpstreamError> {
        let offered = self
            .extensions
            .xclient
            .as_deref()
            .ok_or(IdentityError::NotOffered("XCLIENT"))?;
        let line = client.xclient(offered)?;
        let reply = self.conn.command(line.as_bytes(), Phase::Xclient).await?;
        // Postfix and Exim answer with a new greeting (220); the first description of the
        // extension said 250. Either way the session starts over with EHLO.
        if !matches!(reply.code(), 220 | 250) {
            return Err(UpstreamError::IdentityRefused {
                phase: Phase::Xclient,
                reply,
            });
        }
        self.extensions =
            greet_again(&mut self.conn, &client.helo_for_upstream(), client.esmtp).await?;
        Ok(())
    }

    /// Opens a transaction: XFORWARD first when the upstream is to be told that way (its
    /// attributes last one transaction), then MAIL. `client` None: mail sealgate writes itself.
    pub async fn mail(
        mut self,
        path: &PathWithParams,
        client: Option<&ClientIdentity>,
        ident: &str,
    ) -> Result<Mail<S>, UpstreamError> {
        if let (ForwardClient::Xforward, Some(client)) = (self.forward, client) {
            self.xforward(client, ident).await?;
        }
        let mut path = path.clone();
        if !self.extensions.eightbitmime {
            path.params.retain(|(k, _)| k != "BODY");
        }
        let line = format!("MAIL FROM:{}", path.wire());
        let reply = self.conn.command(line.as_bytes(), Phase::Mail).await?;
        Ok(if reply.is_positive() {
            Mail::Accepted(InTransaction { session: self }, reply)
        } else {
            Mail::Refused(self, reply)
        })
    }

    async fn xforward(
        &mut self,
        client: &ClientIdentity,
        ident: &str,
    ) -> Result<(), UpstreamError> {
        let offered = self
            .extensions
            .xforward
            .as_deref()
            .ok_or(IdentityError::NotOffered("XFORWARD"))?;
        let line = client.xforward(offered, ident)?;
        let reply = self.conn.command(line.as_bytes(), Phase::Xforward).await?;
        if reply.code() != 250 {
            return Err(UpstreamError::IdentityRefused {
                phase: Phase::Xforward,
                reply,
            });
        }
        Ok(())
    }

    /// Passes an AUTH command or continuation line through.
    pub async fn auth(&mut self, line: &Secret) -> Result<Reply, UpstreamError> {
        self.conn.command(line.expose(), Phase::Auth).await
    }

    pub async fn quit(mut self) {
        let _ = self.conn.command(b"QUIT", Phase::Quit).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(self.conn.stream_mut()).await;
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> InTransaction<S> {
    pub fn features(&self) -> UpstreamFeatures {
        self.session.features()
    }

    pub async fn rcpt(&mut self, path: &PathWithParams) -> Result<Reply, UpstreamError> {
        let line = format!("RCPT TO:{}", path.wire());
        self.session
            .conn
            .command(line.as_bytes(), Phase::Rcpt)
            .await
    }

    /// Ends the transaction without a message. A refused RSET is an error: the session's
    /// state is unknown.
    pub async fn rset(mut self) -> Result<Ready<S>, UpstreamError> {
        let reply = self.session.conn.command(b"RSET", Phase::Rset).await?;
        if !reply.is_positive() {
            return Err(UpstreamError::Refused {
                phase: Phase::Rset,
                reply,
            });
        }
        Ok(self.session)
    }

    /// DATA, the dot-stuffed content, the final dot, and the final reply; the session is
    /// ready for the next transaction. A refusal of DATA itself is returned as the reply; any
    /// failure once content is on the wire is an error (the caller answers 4xx: SECURITY.md
    /// I4), and so is a final reply that is not 2xx, 4xx or 5xx.
    pub async fn data(mut self, spool: &mut Spool) -> Result<(Ready<S>, Reply), UpstreamError> {
        let conn = &mut self.session.conn;
        let reply = conn.command(b"DATA", Phase::Data).await?;
        if reply.is_transient() || reply.is_permanent() {
            return Ok((self.session, reply));
        }
        if reply.code() != 354 {
            // A 2xx here would pass for a final reply with nothing delivered (I4).
            return Err(UpstreamError::Malformed {
                phase: Phase::Data,
                source: ReplyError::Unexpected(reply.code()),
            });
        }
        conn.expect_nothing_buffered(Phase::Data)?;
        send_content(conn, spool).await?;
        let reply = conn.read_reply(Phase::FinalReply).await?;
        if !(reply.is_positive() || reply.is_transient() || reply.is_permanent()) {
            return Err(UpstreamError::Malformed {
                phase: Phase::FinalReply,
                source: ReplyError::Unexpected(reply.code()),
            });
        }
        Ok((self.session, reply))
    }

    pub async fn quit(self) {
        self.session.quit().await
    }
}

/// The content, dot-stuffed, in 64 KiB pieces, and the final dot.
async fn send_content<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    spool: &mut Spool,
) -> Result<(), UpstreamError> {
    let mut stuffer = DotStuffer::default();
    let mut out = Vec::with_capacity(70 * 1024);
    let mut offset = 0u64;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = spool
            .read_at(offset, &mut chunk)
            .map_err(|source| UpstreamError::Io {
                phase: Phase::Content,
                source,
            })?;
        if n == 0 {
            break;
        }
        offset += n as u64;
        out.clear();
        stuffer.stuff(&chunk[..n], &mut out);
        conn.write_all(&out, Phase::Content).await?;
    }
    out.clear();
    stuffer.finish(&mut out);
    conn.write_all(&out, Phase::Content).await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

    use super::*;
    use crate::upstream::client::test_session;

    /// A scripted upstream on the other end of the pipe: greets, then answers each command
    /// line with the reply `answer` gives (None: say nothing); DATA content up to the dot is
    /// collected and answered with `final_reply`. Returns every line it read.
    fn upstream(
        server: DuplexStream,
        answer: fn(&str) -> Option<&'static str>,
        final_reply: &'static str,
    ) -> tokio::task::JoinHandle<Vec<String>> {
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(server);
            let mut r = BufReader::new(r);
            w.write_all(b"220 up.test ESMTP\r\n").await.unwrap();
            let (mut seen, mut in_data) = (Vec::new(), false);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return seen;
                }
                let line = line.trim_end().to_string();
                seen.push(line.clone());
                let reply = if in_data {
                    in_data = line != ".";
                    (!in_data).then_some(final_reply)
                } else if line.starts_with("EHLO") {
                    Some("250-up.test\r\n250 SIZE 1000")
                } else {
                    let reply = answer(&line);
                    in_data = line == "DATA" && reply == Some("354 go ahead");
                    reply
                };
                if let Some(reply) = reply {
                    w.write_all(format!("{reply}\r\n").as_bytes())
                        .await
                        .unwrap();
                }
            }
        })
    }

    fn path(a: &str) -> PathWithParams {
        PathWithParams {
            address: a.into(),
            params: vec![("SIZE".into(), Some("10".into()))],
        }
    }

    /// A session to a scripted upstream, inside a transaction (MAIL accepted).
    async fn transaction(
        answer: fn(&str) -> Option<&'static str>,
        final_reply: &'static str,
    ) -> (
        InTransaction<DuplexStream>,
        tokio::task::JoinHandle<Vec<String>>,
    ) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let up = upstream(server, answer, final_reply);
        let ready = test_session(client).await.unwrap();
        match ready.mail(&path("a@x.test"), None, "t").await.unwrap() {
            Mail::Accepted(txn, _) => (txn, up),
            Mail::Refused(_, reply) => panic!("MAIL refused: {reply}"),
        }
    }

    fn accept_all(line: &str) -> Option<&'static str> {
        Some(if line == "DATA" {
            "354 go ahead"
        } else {
            "250 ok"
        })
    }

    #[tokio::test]
    async fn a_transaction_goes_ready_mail_rcpt_data_and_back_to_ready() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let up = upstream(server, accept_all, "250 2.0.0 queued");
        let ready = test_session(client).await.unwrap();
        assert_eq!(ready.features().size, Some(1000));
        let Mail::Accepted(mut txn, _) = ready.mail(&path("a@x.test"), None, "t1").await.unwrap()
        else {
            panic!("MAIL refused")
        };
        assert!(txn.rcpt(&path("b@y.test")).await.unwrap().is_positive());
        let mut content = Spool::from_bytes(b"Subject: x\r\n\r\n.dot first\r\n".to_vec());
        let (ready, reply) = txn.data(&mut content).await.unwrap();
        assert_eq!(reply.code(), 250);
        // The session carries a second transaction.
        assert!(matches!(
            ready.mail(&path("a@x.test"), None, "t2").await.unwrap(),
            Mail::Accepted(..)
        ));
        let seen = up.await.unwrap();
        assert!(
            seen.contains(&"MAIL FROM:<a@x.test> SIZE=10".to_string()),
            "{seen:?}"
        );
        assert!(
            seen.contains(&"..dot first".to_string()),
            "content is dot-stuffed: {seen:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_mail_leaves_the_session_ready() {
        fn refuse_mail(line: &str) -> Option<&'static str> {
            Some(if line.starts_with("MAIL") {
                "550 5.7.1 no"
            } else {
                "250 ok"
            })
        }
        let (client, server) = tokio::io::duplex(64 * 1024);
        let _up = upstream(server, refuse_mail, "250 ok");
        let ready = test_session(client).await.unwrap();
        match ready.mail(&path("a@x.test"), None, "t").await.unwrap() {
            Mail::Refused(ready, reply) => {
                assert_eq!(reply.code(), 550);
                assert_eq!(ready.features().size, Some(1000));
            }
            Mail::Accepted(..) => panic!("a refused MAIL opened a transaction"),
        }
    }

    #[tokio::test]
    async fn a_refused_data_is_the_reply_and_a_2xx_to_data_is_an_error() {
        fn refuse_data(line: &str) -> Option<&'static str> {
            Some(if line == "DATA" {
                "554 5.5.1 no valid recipients"
            } else {
                "250 ok"
            })
        }
        let (txn, _up) = transaction(refuse_data, "250 ok").await;
        let (_, reply) = txn
            .data(&mut Spool::from_bytes(b"x\r\n".to_vec()))
            .await
            .unwrap();
        assert_eq!(reply.code(), 554);

        // 250 to DATA would pass for a delivery that never happened (SECURITY.md I4).
        fn ok_to_data(_: &str) -> Option<&'static str> {
            Some("250 ok")
        }
        let (txn, _up) = transaction(ok_to_data, "250 ok").await;
        let err = txn
            .data(&mut Spool::from_bytes(b"x\r\n".to_vec()))
            .await
            .err();
        assert!(matches!(
            err,
            Some(UpstreamError::Malformed {
                phase: Phase::Data,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_final_reply_that_is_not_final_is_an_error_and_a_refused_rset_too() {
        let (txn, _up) = transaction(accept_all, "354 more?").await;
        let err = txn
            .data(&mut Spool::from_bytes(b"x\r\n".to_vec()))
            .await
            .err();
        assert!(matches!(
            err,
            Some(UpstreamError::Malformed {
                phase: Phase::FinalReply,
                ..
            })
        ));

        fn refuse_rset(line: &str) -> Option<&'static str> {
            Some(if line == "RSET" { "500 what" } else { "250 ok" })
        }
        let (txn, _up) = transaction(refuse_rset, "250 ok").await;
        assert!(matches!(
            txn.rset().await,
            Err(UpstreamError::Refused {
                phase: Phase::Rset,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_silent_upstream_times_out() {
        fn silent(_: &str) -> Option<&'static str> {
            None
        }
        let (client, server) = tokio::io::duplex(64 * 1024);
        let _up = upstream(server, silent, "250 ok");
        let ready = test_session(client).await.unwrap();
        tokio::time::pause();
        let err = ready.mail(&path("a@x.test"), None, "t").await.err();
        assert!(
            matches!(err, Some(UpstreamError::Timeout(Phase::Mail))),
            "{err:?}"
        );
    }
}
