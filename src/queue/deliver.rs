//! One upstream transaction for one copy, with a verdict for every recipient: what the queue
//! needs to know who is served, who must wait and who is to be told "failed".

use crate::smtp::command::PathWithParams;
use crate::smtp::spool::Spool;
use crate::smtp::{Reply, ReplyError};
use crate::upstream::{ClientIdentity, Phase, Ready, UpstreamError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered(Reply),
    /// Try again later.
    Temporary(Reply),
    /// Failed for good: a DSN is owed.
    Permanent(Reply),
}

impl Verdict {
    fn of(reply: Reply) -> Verdict {
        let reply = reply.with_enhanced_default();
        if reply.is_positive() {
            Verdict::Delivered(reply)
        } else if reply.is_permanent() {
            Verdict::Permanent(reply)
        } else {
            Verdict::Temporary(reply)
        }
    }

    pub fn reply(&self) -> &Reply {
        match self {
            Verdict::Delivered(r) | Verdict::Temporary(r) | Verdict::Permanent(r) => r,
        }
    }
}

/// Sends `content` (kept by the caller: a copy that fails is queued from it) to `rcpts` (MAIL without SIZE: the sealed size differs from the client's).
/// Returns a verdict per recipient, in order, and the error that made the session unusable,
/// if any (the caller drops the session then). Anything short of a 250 after the final dot is
/// never "delivered" (SECURITY.md I4).
pub async fn deliver(
    up: &mut Ready,
    mail: &PathWithParams,
    rcpts: &[PathWithParams],
    content: &mut Spool,
    client: Option<&ClientIdentity>,
    ident: &str,
) -> (Vec<Verdict>, Option<UpstreamError>) {
    let all = |v: Verdict| vec![v; rcpts.len()];
    let temp_of = |e: &UpstreamError| Verdict::Temporary(crate::serve::replies::upstream(e));
    let mut mail = mail.clone();
    mail.params.retain(|(k, _)| k != "SIZE");
    match up.mail(&mail, client, ident).await {
        Ok(r) if r.is_positive() => {}
        Ok(r) => return (all(Verdict::of(r)), None),
        Err(e) => return (all(temp_of(&e)), Some(e)),
    }
    let mut verdicts: Vec<Option<Verdict>> = vec![None; rcpts.len()];
    let mut accepted = Vec::new();
    for (i, rcpt) in rcpts.iter().enumerate() {
        match up.rcpt(rcpt).await {
            Ok(r) if r.is_positive() => accepted.push(i),
            Ok(r) => verdicts[i] = Some(Verdict::of(r)),
            Err(e) => {
                let v = temp_of(&e);
                return (
                    verdicts
                        .into_iter()
                        .map(|x| x.unwrap_or(v.clone()))
                        .collect(),
                    Some(e),
                );
            }
        }
    }
    let finish = |verdicts: Vec<Option<Verdict>>, v: Verdict| -> Vec<Verdict> {
        verdicts
            .into_iter()
            .map(|x| x.unwrap_or(v.clone()))
            .collect()
    };
    if accepted.is_empty() {
        let error = up.rset().await.err();
        let unused = Verdict::Temporary(Reply::new(451, "4.3.0", "not sent"));
        return (finish(verdicts, unused), error);
    }
    match up.send_message(content).await {
        Ok(r) if r.is_positive() || r.is_transient() || r.is_permanent() => {
            (finish(verdicts, Verdict::of(r)), None)
        }
        // A 1xx/3xx final reply is a protocol error, never a success.
        Ok(r) => {
            let e = UpstreamError::Malformed {
                phase: Phase::FinalReply,
                source: ReplyError::Unexpected(r.code()),
            };
            (finish(verdicts, temp_of(&e)), Some(e))
        }
        Err(e) => (finish(verdicts, temp_of(&e)), Some(e)),
    }
}
