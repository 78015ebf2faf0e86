//! A small, tolerant Content-Type parser (RFC 2045 §5.1; comments skipped).

use super::header::strip_comments;

/// A parsed Content-Type value. Type, subtype and parameter names are lowercase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentType {
    /// Top-level type, e.g. `text`.
    pub mime_type: String,
    /// Subtype, e.g. `plain`.
    pub subtype: String,
    /// Parameters in order: (lowercase name, value without quotes).
    pub params: Vec<(String, String)>,
}

impl Default for ContentType {
    /// RFC 2045 default: `text/plain; charset=us-ascii`.
    fn default() -> Self {
        ContentType {
            mime_type: "text".into(),
            subtype: "plain".into(),
            params: vec![("charset".into(), "us-ascii".into())],
        }
    }
}

impl ContentType {
    /// Parses an unfolded Content-Type value; returns `None` if there is no `type/subtype`.
    pub fn parse(value: &str) -> Option<ContentType> {
        let cleaned = strip_comments(value);
        let mut parts = split_params(&cleaned).into_iter();
        let essence = parts.next()?;
        let (t, s) = essence.trim().split_once('/')?;
        let (t, s) = (t.trim(), s.trim());
        if t.is_empty() || s.is_empty() || !is_token(t) || !is_token(s) {
            return None;
        }
        let mut params = Vec::new();
        for p in parts {
            if let Some((name, val)) = p.split_once('=') {
                let name = name.trim().to_ascii_lowercase();
                let val = unquote(val.trim());
                if !name.is_empty() {
                    params.push((name, val));
                }
            }
        }
        Some(ContentType {
            mime_type: t.to_ascii_lowercase(),
            subtype: s.to_ascii_lowercase(),
            params,
        })
    }

    /// First parameter with that (lowercase) name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `type/subtype` equality, case-insensitive.
    pub fn is(&self, mime_type: &str, subtype: &str) -> bool {
        self.mime_type.eq_ignore_ascii_case(mime_type) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// Multipart with a non-empty boundary parameter. Its length is not checked: RFC 2046 says
    /// 70 characters at most, but parsers take longer ones, so sealgate must see the same parts.
    pub fn multipart_boundary(&self) -> Option<&str> {
        if self.mime_type != "multipart" {
            return None;
        }
        self.param("boundary").filter(|b| !b.is_empty())
    }
}

fn is_token(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

fn split_params(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                in_quote = !in_quote;
                cur.push(c);
            }
            ';' if !in_quote => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn unquote(v: &str) -> String {
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        let inner = &v[1..v.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut escaped = false;
        for c in inner.chars() {
            if escaped {
                out.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else {
                out.push(c);
            }
        }
        out
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_params_quotes_comments() {
        let ct = ContentType::parse(
            "Multipart/Mixed (comment; x=y); boundary=\"a;b \\\"c\\\"\"; Charset=UTF-8",
        )
        .unwrap();
        assert!(ct.is("multipart", "mixed"));
        assert_eq!(ct.param("boundary"), Some("a;b \"c\""));
        assert_eq!(ct.param("charset"), Some("UTF-8"));
        assert_eq!(ct.multipart_boundary(), Some("a;b \"c\""));
    }

    #[test]
    fn rejects_garbage() {
        assert!(ContentType::parse("").is_none());
        assert!(ContentType::parse("text").is_none());
        assert!(ContentType::parse("/plain").is_none());
        assert!(ContentType::parse("te xt/plain").is_none());
        assert!(ContentType::parse("multipart/mixed")
            .unwrap()
            .multipart_boundary()
            .is_none());
    }
}
