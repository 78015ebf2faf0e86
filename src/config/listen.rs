//! `[[listen]]` sections: address, TLS (certificate and key loaded here, once, into the rustls
//! configuration the listener serves with), who may connect, and the PROXY protocol.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::netlist::NetList;
use super::{resolve, tls, Collector};
use crate::serve::proxy_protocol::Version;

/// A listener's TLS, with its material loaded.
#[derive(Debug, Clone)]
pub enum ListenerTls {
    None,
    /// Offered after STARTTLS.
    Starttls(Arc<rustls::ServerConfig>),
    /// From the first byte (port 465).
    Implicit(Arc<rustls::ServerConfig>),
}

impl ListenerTls {
    /// What the acceptor serves with; None for a plaintext-only listener.
    pub fn server_config(&self) -> Option<&Arc<rustls::ServerConfig>> {
        match self {
            ListenerTls::None => None,
            ListenerTls::Starttls(c) | ListenerTls::Implicit(c) => Some(c),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    pub tls: ListenerTls,
    pub require_tls: bool,
    /// Clients of this listener may be signed for without AUTH (e.g. the internal MTA's port).
    pub sign_without_auth: bool,
    /// Only these clients may connect (others get 554 at connect); None: any.
    pub allow_from: Option<NetList>,
    /// A PROXY protocol header is expected first, from these addresses only.
    pub proxy: Option<(Version, NetList)>,
}

/// `tls` as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ListenTls {
    None,
    Starttls,
    Implicit,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    address: String,
    tls: ListenTls,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    require_tls: bool,
    #[serde(default)]
    sign_without_auth: bool,
    allow_from: Option<Vec<String>>,
    proxy_protocol: Option<String>,
    proxy_from: Option<Vec<String>>,
}

/// Every `[[listen]]` section; at least one is required.
pub(super) fn section(raw: Vec<RawListen>, base: &Path, c: &mut Collector) -> Vec<ListenerConfig> {
    if raw.is_empty() {
        c.push("listen", "at least one [[listen]] section is required");
    }
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, l)| listener(&format!("listen[{i}]"), l, base, c))
        .collect()
}

/// One `[[listen]]` section, reported as `at`. An address that does not parse ends its checks.
fn listener(at: &str, l: RawListen, base: &Path, c: &mut Collector) -> Option<ListenerConfig> {
    let Ok(address) = l.address.parse::<SocketAddr>() else {
        c.push(
            format!("{at}.address"),
            format!("not an IP:port address: {:?}", l.address),
        );
        return None;
    };
    let tls = listener_tls(at, &l, base, c);
    let allow_from = net_list(format!("{at}.allow_from"), l.allow_from.as_deref(), c);
    if l.sign_without_auth && l.allow_from.is_none() {
        // Anyone who can connect could have mail signed in any sender's name (I8).
        c.push(
            format!("{at}.sign_without_auth"),
            "needs allow_from: the clients trusted to be signed for without AUTH",
        );
    }
    let proxy = proxy(at, &l, c);
    Some(ListenerConfig {
        address,
        tls: tls?,
        require_tls: l.require_tls,
        sign_without_auth: l.sign_without_auth,
        allow_from,
        proxy,
    })
}

/// `tls`, `cert`, `key` and `require_tls`: the certificate chain and key are loaded into the
/// server configuration now, so a missing or bad file is reported by `check-config`.
fn listener_tls(at: &str, l: &RawListen, base: &Path, c: &mut Collector) -> Option<ListenerTls> {
    if l.tls == ListenTls::None {
        if l.require_tls {
            c.push(
                format!("{at}.require_tls"),
                "require_tls needs tls = \"starttls\"",
            );
        }
        return Some(ListenerTls::None);
    }
    let (Some(cert), Some(key)) = (&l.cert, &l.key) else {
        c.push(at, "cert and key are required unless tls = \"none\"");
        return None;
    };
    let config = tls::server_config(&resolve(base, cert), &resolve(base, key))
        .map_err(|e| c.push(format!("{at}.cert/key"), e.to_string()))
        .ok()?;
    Some(match l.tls {
        ListenTls::Implicit => ListenerTls::Implicit(config),
        _ => ListenerTls::Starttls(config),
    })
}

/// An address list (`allow_from`, `proxy_from`); a bad entry is reported at `location`.
fn net_list(location: String, entries: Option<&[String]>, c: &mut Collector) -> Option<NetList> {
    NetList::parse(entries?)
        .map_err(|e| c.push(location, e))
        .ok()
}

/// `proxy_protocol` and `proxy_from`: both or neither, so that no one can claim any address.
fn proxy(at: &str, l: &RawListen, c: &mut Collector) -> Option<(Version, NetList)> {
    let off = matches!(l.proxy_protocol.as_deref(), None | Some("off"));
    let version = match l.proxy_protocol.as_deref() {
        None | Some("off") => None,
        Some("v1") => Some(Version::V1),
        Some("v2") => Some(Version::V2),
        Some(other) => {
            c.push(
                format!("{at}.proxy_protocol"),
                format!("{other:?}: must be \"v1\", \"v2\" or \"off\""),
            );
            None
        }
    };
    let from = net_list(format!("{at}.proxy_from"), l.proxy_from.as_deref(), c);
    match (version, from, l.proxy_from.is_some()) {
        (Some(v), Some(from), _) => Some((v, from)),
        (Some(_), None, false) => {
            // Anyone could claim any address (and pass allow_from, and XCLIENT).
            c.push(
                format!("{at}.proxy_from"),
                "required with proxy_protocol: the load balancers' addresses",
            );
            None
        }
        (None, _, true) if off => {
            c.push(
                format!("{at}.proxy_from"),
                "set, but proxy_protocol is off (ambiguous: set proxy_protocol too)",
            );
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::super::Config;
    use super::*;

    fn text(extra: &str) -> String {
        format!(
            "[store]\npath = \"s\"\n[[listen]]\naddress = \"127.0.0.1:25\"\ntls = \"none\"\n{extra}\n[upstream]\naddress = \"mx:25\"\ntls = \"starttls\"\n"
        )
    }

    fn listen_errors(extra: &str) -> Vec<String> {
        errors(&text(extra))
            .into_iter()
            .filter(|e| e.starts_with("listen"))
            .collect()
    }

    #[test]
    fn sign_without_auth_needs_allow_from() {
        let errs = listen_errors("sign_without_auth = true");
        assert!(
            errs.iter()
                .any(|e| e.starts_with("listen[0].sign_without_auth: needs allow_from")),
            "{errs:?}"
        );
        let errs =
            listen_errors("sign_without_auth = true\nallow_from = [\"10.0.0.0/8\", \"::1\"]");
        assert!(errs.is_empty(), "{errs:?}");
        let errs = listen_errors("allow_from = [\"10.0.0.0/8\", \"nope\"]");
        assert!(
            errs.iter()
                .any(|e| e.starts_with("listen[0].allow_from: \"nope\"")),
            "{errs:?}"
        );
        let errs = listen_errors("allow_from = []");
        assert!(
            errs.iter().any(|e| e.starts_with("listen[0].allow_from")),
            "{errs:?}"
        );
    }

    #[test]
    fn proxy_protocol_needs_proxy_from_and_the_reverse() {
        assert!(listen_errors("proxy_protocol = \"v2\"")[0].contains("proxy_from: required"));
        assert!(listen_errors("proxy_from = [\"10.0.0.1\"]")[0].contains("proxy_protocol is off"));
        assert!(
            listen_errors("proxy_protocol = \"v3\"\nproxy_from = [\"10.0.0.1\"]")[0]
                .contains("proxy_protocol")
        );
        assert!(listen_errors("proxy_protocol = \"v1\"\nproxy_from = [\"10.0.0.1\"]").is_empty());
        assert!(listen_errors("proxy_protocol = \"off\"").is_empty());
    }

    #[test]
    fn address_and_tls_keys() {
        let errs = errors(&text("").replace("127.0.0.1:25", "localhost:25"));
        assert!(
            errs.contains(&"listen[0].address: not an IP:port address: \"localhost:25\"".into()),
            "{errs:?}"
        );
        let errs = listen_errors("require_tls = true");
        assert_eq!(
            errs,
            ["listen[0].require_tls: require_tls needs tls = \"starttls\""]
        );
        let errs = errors(&text("").replace("tls = \"none\"", "tls = \"implicit\""));
        assert!(
            errs.contains(&"listen[0]: cert and key are required unless tls = \"none\"".into()),
            "{errs:?}"
        );
        let errs = errors("[store]\npath = \"s\"\n");
        assert!(errs.contains(&"listen: at least one [[listen]] section is required".into()));
    }

    /// The certificate and key are read once, at parse: the listener's configuration holds the
    /// server configuration, and a missing file is named with the key it came from.
    #[test]
    fn the_certificate_is_loaded_into_the_listener() {
        let (dir, base) = super::super::tests::valid("");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        let with = |mode: &str, key: &str| {
            base.replace(
                "tls = \"none\"",
                &format!(
                    "tls = \"{mode}\"\ncert = \"server.pem\"\nkey = \"{key}\"\nrequire_tls = true"
                ),
            )
        };
        let parse = |text: &str| Config::parse(text, dir.path()).map(|c| c.listeners);
        let l = parse(&with("starttls", "server.key")).unwrap();
        assert!(matches!(l[0].tls, ListenerTls::Starttls(_)));
        assert!(l[0].require_tls && l[0].tls.server_config().is_some());
        let l = parse(&with("implicit", "server.key")).unwrap();
        assert!(matches!(l[0].tls, ListenerTls::Implicit(_)));
        let errs = parse(&with("starttls", "missing.key")).unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            format!(
                "listen[0].cert/key: {}: No such file or directory (os error 2)",
                dir.path().join("missing.key").display()
            )
        );
        std::fs::write(dir.path().join("server.key"), "not a key").unwrap();
        let errs = parse(&with("starttls", "server.key")).unwrap_err();
        assert!(
            errs[0].to_string().ends_with("no usable PEM private key"),
            "{errs:?}"
        );
    }
}
