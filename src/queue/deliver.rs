//! One upstream transaction for one copy, with a verdict for every recipient: what the queue
//! needs to know who is served, who must wait and who is to be told "failed".

use crate::smtp::command::PathWithParams;
use crate::smtp::spool::Spool;
use crate::smtp::Reply;
use crate::upstream::{ClientIdentity, Mail, Ready, UpstreamError};

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

/// Sends `content` (kept by the caller: a copy that fails is queued from it) to `rcpts` in
/// one transaction on `up` (MAIL without SIZE: the sealed size differs from the client's).
/// Returns a verdict per recipient, in order, and the session for the next transaction, or
/// the error that made it unusable. Anything short of a 250 after the final dot is never
/// "delivered" (SECURITY.md I4).
pub async fn deliver(
    up: Ready,
    mail: &PathWithParams,
    rcpts: &[PathWithParams],
    content: &mut Spool,
    client: Option<&ClientIdentity>,
    ident: &str,
) -> (Vec<Verdict>, Result<Ready, UpstreamError>) {
    let all = |v: Verdict| vec![v; rcpts.len()];
    let temp_of = |e: &UpstreamError| Verdict::Temporary(crate::serve::replies::upstream(e));
    let mut mail = mail.clone();
    mail.params.retain(|(k, _)| k != "SIZE");
    let mut txn = match up.mail(&mail, client, ident).await {
        Ok(Mail::Accepted(txn, _)) => txn,
        Ok(Mail::Refused(up, r)) => return (all(Verdict::of(r)), Ok(up)),
        Err(e) => return (all(temp_of(&e)), Err(e)),
    };
    let mut verdicts: Vec<Option<Verdict>> = vec![None; rcpts.len()];
    let finish = |verdicts: Vec<Option<Verdict>>, v: Verdict| -> Vec<Verdict> {
        verdicts
            .into_iter()
            .map(|x| x.unwrap_or(v.clone()))
            .collect()
    };
    let mut accepted = 0;
    for (i, rcpt) in rcpts.iter().enumerate() {
        match txn.rcpt(rcpt).await {
            Ok(r) if r.is_positive() => accepted += 1,
            Ok(r) => verdicts[i] = Some(Verdict::of(r)),
            Err(e) => return (finish(verdicts, temp_of(&e)), Err(e)),
        }
    }
    if accepted == 0 {
        let unused = Verdict::Temporary(Reply::new(451, "4.3.0", "not sent"));
        return (finish(verdicts, unused), txn.rset().await);
    }
    match txn.data(content).await {
        Ok((up, r)) => (finish(verdicts, Verdict::of(r)), Ok(up)),
        Err(e) => (finish(verdicts, temp_of(&e)), Err(e)),
    }
}
