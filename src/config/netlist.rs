//! Lists of networks (`allow_from`, `proxy_from`): CIDR blocks or single addresses.

use std::net::IpAddr;

use ipnet::IpNet;

/// A non-empty list of networks. An IPv4-mapped IPv6 address (a dual-stack listener's view of
/// an IPv4 client) is matched as the IPv4 address it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetList(Vec<IpNet>);

impl NetList {
    /// Parses `["10.0.0.0/8", "::1", ...]`. Errors name the entry.
    pub fn parse(entries: &[String]) -> Result<NetList, String> {
        if entries.is_empty() {
            return Err("empty list: no client could connect".into());
        }
        let mut nets = Vec::with_capacity(entries.len());
        for e in entries {
            let e = e.trim();
            let net = match e.parse::<IpNet>() {
                Ok(n) if n != n.trunc() => {
                    return Err(format!(
                        "{e:?}: host bits set (did you mean {}?)",
                        n.trunc()
                    ))
                }
                Ok(n) => n,
                Err(_) => match e.parse::<IpAddr>() {
                    Ok(a) => IpNet::from(a),
                    Err(_) => return Err(format!("{e:?}: not an address or CIDR block")),
                },
            };
            nets.push(net);
        }
        Ok(NetList(nets))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Result<NetList, String> {
        NetList::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn cidrs_and_single_addresses() {
        let l = list(&["10.0.0.0/8", "::1", "192.0.2.7", "2001:db8::/32"]).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(l.contains(ip("10.255.0.1")));
        assert!(!l.contains(ip("11.0.0.1")));
        assert!(l.contains(ip("::1")));
        assert!(!l.contains(ip("127.0.0.1")));
        assert!(l.contains(ip("192.0.2.7")));
        assert!(!l.contains(ip("192.0.2.8")));
        assert!(l.contains(ip("2001:db8:1::5")));
        // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
        assert!(l.contains(ip("::ffff:10.1.2.3")));
        assert!(!l.contains(ip("::ffff:11.1.2.3")));
    }

    #[test]
    fn bad_entries_are_named() {
        assert!(list(&[]).unwrap_err().contains("empty"));
        assert!(list(&["10.0.0.0/33"]).unwrap_err().contains("10.0.0.0/33"));
        assert!(list(&["localhost"]).unwrap_err().contains("localhost"));
        assert!(list(&["10.1.2.3/8"]).unwrap_err().contains("10.0.0.0/8"));
    }
}
