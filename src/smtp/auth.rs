//! Observing an AUTH exchange that passes through to the upstream (sans-IO): the client's
//! lines and the upstream's replies in, the identity the client authenticated as out. The
//! relay needs it to decide whom a client may sign as; the upstream does the checking.
//!
//! Only PLAIN (RFC 4616) and LOGIN carry the user name in the clear; any other mechanism
//! that succeeds yields an empty identity, which grants signing for nobody. Decoded bytes
//! (they hold the password) are zeroized.

use base64::Engine;
use zeroize::Zeroizing;

use super::Reply;

/// Where an AUTH exchange stands.
#[derive(Default)]
pub struct AuthObserver {
    progress: Progress,
}

#[derive(Default)]
enum Progress {
    #[default]
    None,
    /// `AUTH PLAIN` without an initial response: the credentials come in the next line.
    PlainAwaiting,
    /// `AUTH LOGIN`: the user name comes in the next line.
    LoginUser,
    /// LOGIN's user name is known; the password comes next.
    LoginPassword(String),
    Done(String),
}

impl AuthObserver {
    /// One line the client sent (the AUTH command or a continuation) and the upstream's
    /// reply to it. Returns the identity when the reply completes a successful exchange
    /// (empty when the mechanism does not say, or the authorization identity differs).
    pub fn observe(&mut self, line: &[u8], reply: &Reply) -> Option<String> {
        let progress = std::mem::take(&mut self.progress);
        let next = if line.len() > 5 && line[..5].eq_ignore_ascii_case(b"AUTH ") {
            let mut words = line[5..].split(|&b| b == b' ');
            let mech = words.next().unwrap_or_default().to_ascii_uppercase();
            match (mech.as_slice(), words.next()) {
                (b"PLAIN", Some(initial)) => plain_identity(decode(initial)),
                (b"PLAIN", None) => Progress::PlainAwaiting,
                (b"LOGIN", Some(user)) => login_user(decode(user)),
                (b"LOGIN", None) => Progress::LoginUser,
                _ => Progress::None,
            }
        } else {
            match progress {
                Progress::PlainAwaiting => plain_identity(decode(line)),
                Progress::LoginUser => login_user(decode(line)),
                Progress::LoginPassword(user) => Progress::Done(user),
                _ => Progress::None,
            }
        };
        if reply.is_positive() {
            return Some(match next {
                Progress::Done(user) | Progress::LoginPassword(user) => user,
                _ => String::new(),
            });
        }
        if reply.code() == 334 {
            self.progress = next;
        }
        None
    }
}

fn decode(b64: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .map(Zeroizing::new)
}

/// PLAIN's message is authzid NUL authcid NUL password. Many servers check only authcid and
/// ignore authzid, so the identity is authcid; an authzid that differs from it grants none.
fn plain_identity(decoded: Option<Zeroizing<Vec<u8>>>) -> Progress {
    let Some(d) = decoded else {
        return Progress::None;
    };
    let mut parts = d.split(|&b| b == 0);
    let authz = parts.next().unwrap_or_default();
    let authc = parts.next().unwrap_or_default();
    if !authz.is_empty() && !authz.eq_ignore_ascii_case(authc) {
        return Progress::Done(String::new());
    }
    Progress::Done(String::from_utf8_lossy(authc).into_owned())
}

fn login_user(decoded: Option<Zeroizing<Vec<u8>>>) -> Progress {
    match decoded {
        Some(d) => Progress::LoginPassword(String::from_utf8_lossy(&d).into_owned()),
        None => Progress::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }
    fn ok() -> Reply {
        Reply::new(235, "2.7.0", "Authentication successful")
    }
    fn more() -> Reply {
        Reply::new(334, "", "")
    }
    fn no() -> Reply {
        Reply::new(535, "5.7.8", "Authentication credentials invalid")
    }

    #[test]
    fn plain_with_initial_response() {
        let mut a = AuthObserver::default();
        let line = format!("AUTH PLAIN {}", b64(b"\0alice@example.org\0secret"));
        assert_eq!(
            a.observe(line.as_bytes(), &ok()),
            Some("alice@example.org".into())
        );
    }

    #[test]
    fn plain_in_a_continuation_line() {
        let mut a = AuthObserver::default();
        assert_eq!(a.observe(b"auth plain", &more()), None);
        let creds = b64(b"alice@example.org\0alice@example.org\0secret");
        assert_eq!(
            a.observe(creds.as_bytes(), &ok()),
            Some("alice@example.org".into())
        );
    }

    #[test]
    fn plain_with_another_authorization_identity_grants_none() {
        let mut a = AuthObserver::default();
        let line = format!(
            "AUTH PLAIN {}",
            b64(b"ceo@example.org\0alice@example.org\0pw")
        );
        assert_eq!(a.observe(line.as_bytes(), &ok()), Some(String::new()));
    }

    #[test]
    fn login_takes_the_user_line() {
        let mut a = AuthObserver::default();
        assert_eq!(a.observe(b"AUTH LOGIN", &more()), None);
        assert_eq!(a.observe(b64(b"bob").as_bytes(), &more()), None);
        assert_eq!(a.observe(b64(b"pw").as_bytes(), &ok()), Some("bob".into()));
    }

    #[test]
    fn login_with_the_user_in_the_command() {
        let mut a = AuthObserver::default();
        let line = format!("AUTH LOGIN {}", b64(b"bob"));
        assert_eq!(a.observe(line.as_bytes(), &more()), None);
        assert_eq!(a.observe(b64(b"pw").as_bytes(), &ok()), Some("bob".into()));
    }

    #[test]
    fn a_refused_exchange_yields_nothing_and_starts_over() {
        let mut a = AuthObserver::default();
        let line = format!("AUTH PLAIN {}", b64(b"\0alice\0wrong"));
        assert_eq!(a.observe(line.as_bytes(), &no()), None);
        // A stray line after the refusal is not taken for credentials.
        assert_eq!(
            a.observe(b64(b"\0mallory\0x").as_bytes(), &ok()),
            Some(String::new())
        );
    }

    #[test]
    fn other_mechanisms_and_bad_base64_name_nobody() {
        let mut a = AuthObserver::default();
        assert_eq!(a.observe(b"AUTH CRAM-MD5", &more()), None);
        assert_eq!(a.observe(b"Ym9iIGFiY2Q=", &ok()), Some(String::new()));
        let mut a = AuthObserver::default();
        assert_eq!(a.observe(b"AUTH PLAIN !!!", &ok()), Some(String::new()));
    }
}
