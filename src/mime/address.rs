//! Mailboxes in address-list header fields (From, To, Cc; RFC 5322 3.4), reduced to their
//! addr-specs. Display names, comments, quoted strings and groups are understood well enough
//! never to mistake text for an address; anything unparseable yields no address rather than a
//! guess (callers treat "no address" conservatively).

use super::header::strip_comments;

/// The addr-specs of an address-list, in order, as written (no case change).
pub fn mailboxes(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    for item in split_top_level(value) {
        let item = strip_comments(&item);
        let item = item.trim();
        // A group "name: a, b;" was split at its commas; drop the "name:" prefix and the ";".
        let item = match find_unquoted(item, ':') {
            Some(i) if !item[..i].contains('<') => item[i + 1..].trim(),
            _ => item,
        };
        let item = item.trim_end_matches(';').trim();
        if item.is_empty() {
            continue;
        }
        let spec = match (find_unquoted(item, '<'), item.rfind('>')) {
            (Some(open), Some(close)) if close > open => item[open + 1..close].trim(),
            (None, None) => item,
            _ => continue,
        };
        if let Some(spec) = valid_addr_spec(spec) {
            out.push(spec);
        }
    }
    out
}

fn valid_addr_spec(spec: &str) -> Option<String> {
    let spec = spec.trim();
    let (local, domain) = spec.rsplit_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && !spec
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '<' || c == '>')
        && !domain.contains(['"', '(', ')', '[']);
    ok.then(|| spec.to_string())
}

/// Splits at commas that are outside quotes, comments, angle brackets and domain literals.
fn split_top_level(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped, mut comment, mut angle) = (false, false, 0usize, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
            cur.push(c);
            continue;
        }
        match c {
            '\\' if quoted || comment > 0 => escaped = true,
            '"' if comment == 0 => quoted = !quoted,
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            '<' if !quoted && comment == 0 => angle = true,
            '>' if !quoted && comment == 0 => angle = false,
            ',' | ';' if !quoted && comment == 0 && !angle => {
                items.push(std::mem::take(&mut cur));
                if c == ';' {
                    cur.push(';');
                }
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    items.push(cur);
    items
}

fn find_unquoted(s: &str, target: char) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ if c == target && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_forms() {
        assert_eq!(mailboxes("bob@y.test"), ["bob@y.test"]);
        assert_eq!(mailboxes("Bob <bob@y.test>"), ["bob@y.test"]);
        assert_eq!(
            mailboxes("\"Doe, John\" <john@x.test>, carol@z.test (Carol, the boss)"),
            ["john@x.test", "carol@z.test"]
        );
        assert_eq!(
            mailboxes("Team: a@x.test, b@x.test;, c@x.test"),
            ["a@x.test", "b@x.test", "c@x.test"]
        );
        assert_eq!(mailboxes("undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(mailboxes("\"a@evil.test\" <real@x.test>"), ["real@x.test"]);
        assert_eq!(
            mailboxes("(comment <fake@x.test>) real@x.test"),
            ["real@x.test"]
        );
    }

    #[test]
    fn garbage_gives_no_address() {
        for v in [
            "",
            "nobody",
            "<>",
            "a@",
            "@b",
            "<a@b",
            "Bob <bob @y.test>",
            "\"unterminated <a@b>",
        ] {
            assert!(mailboxes(v).is_empty(), "{v:?}: {:?}", mailboxes(v));
        }
    }
}
