//! A reply-reading connection to the upstream over any byte stream, with a bounded buffer and a
//! timeout on every wait.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::{Phase, UpstreamError};
use crate::smtp::{Reply, ReplyError, ReplyParser};

pub(crate) struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
    parser: ReplyParser,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub(crate) fn new(stream: S, timeout: Duration) -> Self {
        Conn {
            stream,
            buf: Vec::with_capacity(1024),
            parser: ReplyParser::default(),
            timeout,
        }
    }

    /// Bytes received but not yet part of a reply.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn into_inner(self) -> S {
        self.stream
    }

    pub(crate) fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    pub(crate) async fn read_reply(&mut self, phase: Phase) -> Result<Reply, UpstreamError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match self.parser.parse(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(source) => return Err(UpstreamError::Malformed { phase, source }),
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .map_err(|_| UpstreamError::Timeout(phase))?
                .map_err(|source| UpstreamError::Io { phase, source })?;
            if n == 0 {
                return Err(UpstreamError::Closed(phase));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub(crate) async fn write_all(
        &mut self,
        bytes: &[u8],
        phase: Phase,
    ) -> Result<(), UpstreamError> {
        tokio::time::timeout(self.timeout, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| UpstreamError::Timeout(phase))?
        .map_err(|source| UpstreamError::Io { phase, source })
    }

    /// We never pipeline towards the upstream: a reply waiting before we sent anything would
    /// shift every later reply onto the wrong command. That is a desynchronised peer: abort.
    pub(crate) fn expect_nothing_buffered(&self, phase: Phase) -> Result<(), UpstreamError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(UpstreamError::Malformed {
                phase,
                source: ReplyError::Unsolicited,
            })
        }
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub(crate) async fn command(
        &mut self,
        line: &[u8],
        phase: Phase,
    ) -> Result<Reply, UpstreamError> {
        self.expect_nothing_buffered(phase)?;
        let mut wire = Vec::with_capacity(line.len() + 2);
        wire.extend_from_slice(line);
        wire.extend_from_slice(b"\r\n");
        let result = self.write_all(&wire, phase).await;
        wire.iter_mut().for_each(|b| *b = 0);
        result?;
        self.read_reply(phase).await
    }
}
