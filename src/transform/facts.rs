//! What the policy needs to know about a message's header, and the removal of the triggers
//! (subject tag, `X-Sealgate-Encrypt`) before anything is sent.

use crate::address::Address;
use crate::mime::{self, Limits, MimeError, Protection};
use crate::policy::PolicyConfig;

/// The header field that raises a message to "encryption required". It never leaves sealgate.
pub const TRIGGER_HEADER: &str = "X-Sealgate-Encrypt";

/// The header field sealgate adds to changed copies (`policy.result_header`).
pub const RESULT_HEADER: &str = "X-Sealgate-Result";

/// Every field whose name starts with this is ours: read (the trigger) and removed from client
/// input, so none can be forged by a client (SECURITY.md I14).
const OUR_PREFIX: &str = "X-Sealgate-";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFacts {
    /// Number of From fields.
    pub from_fields: usize,
    /// Mailboxes of all From fields.
    pub from_mailboxes: Vec<String>,
    /// Match keys ([`Address::key`]) of the addresses named in To and Cc: envelope recipients
    /// not among them are Bcc.
    pub visible: Vec<String>,
    /// The message is already signed or encrypted by the client.
    pub protection: Protection,
}

/// Reads the facts from the header.
pub fn read(message: &[u8], limits: &Limits) -> Result<MessageFacts, MimeError> {
    let parsed = mime::parse_message(message, limits)?;
    let mut from_fields = 0;
    let mut from_mailboxes = Vec::new();
    let mut visible = Vec::new();
    for field in &parsed.fields {
        if field.is("From") {
            from_fields += 1;
            from_mailboxes.extend(mime::mailboxes(&field.value()));
        } else if field.is("To") || field.is("Cc") {
            visible.extend(mime::mailboxes(&field.value()).iter().map(|a| {
                Address::parse(a).map_or_else(|_| a.to_lowercase(), |a| a.key().to_string())
            }));
        }
    }
    Ok(MessageFacts {
        from_fields,
        from_mailboxes,
        visible,
        protection: mime::detect_protection(message, limits),
    })
}

/// Removes from the header what must never leave: `Bcc`/`Resent-Bcc` fields, the triggers and
/// every `X-Sealgate-*` field a client sent (ours are added later, never taken from input).
/// Returns the message to send and whether a trigger asked for encryption.
/// `X-Sealgate-Encrypt` is always removed, whatever its value; the subject tag only when
/// configured. The tag is found in the decoded subject (RFC 2047 encoded words), and a subject
/// that had encoded words is encoded again without it. The body is never touched.
pub fn strip_triggers(
    message: Vec<u8>,
    policy: &PolicyConfig,
    limits: &Limits,
) -> Result<(Vec<u8>, bool), MimeError> {
    let parsed = mime::parse_message(&message, limits)?;
    let mut raised = false;
    let mut changed = false;
    let mut header = Vec::with_capacity(parsed.body_offset + 16);
    for field in &parsed.fields {
        if field.is("Bcc") || field.is("Resent-Bcc") {
            // Never shown to anyone, sealed or not (SECURITY.md I7).
            changed = true;
            continue;
        }
        if is_ours(field) {
            changed = true;
            if field.is(TRIGGER_HEADER)
                && policy.header_trigger
                && field.value().trim().eq_ignore_ascii_case("required")
            {
                raised = true;
            }
            continue;
        }
        if let (true, Some(tag)) = (field.is("Subject"), policy.subject_trigger.as_deref()) {
            let encoded = field.raw_value().windows(2).any(|w| w == b"=?");
            let value = if encoded {
                mime::decode_unstructured(field.raw_value())
            } else {
                field.value()
            };
            if let Some(pos) = find_ignore_ascii_case(&value, tag) {
                let mut stripped = String::with_capacity(value.len());
                stripped.push_str(&value[..pos]);
                stripped.push_str(&value[pos + tag.len()..]);
                let stripped = stripped.split_whitespace().collect::<Vec<_>>().join(" ");
                let stripped = if encoded {
                    mime::encode_unstructured(&stripped)
                } else {
                    stripped
                };
                mime::HeaderField::new(field.name(), &stripped)
                    .refold(mime::MAX_LINE)?
                    .write_to(&mut header);
                raised = true;
                changed = true;
                continue;
            }
        }
        field.write_to(&mut header);
    }
    if !changed {
        return Ok((message, false));
    }
    header.extend_from_slice(b"\r\n");
    header.extend_from_slice(&message[parsed.body_offset..]);
    Ok((header, raised))
}

fn is_ours(field: &mime::HeaderField) -> bool {
    field
        .name()
        .get(..OUR_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(OUR_PREFIX))
}

/// Byte offset of `needle` in `haystack`, ASCII case-insensitively. Offsets are those of the
/// original string: a match starts where the needle's first (character-starting) byte matched,
/// so slicing there is always on a character boundary.
fn find_ignore_ascii_case(haystack: &str, needle: &str) -> Option<usize> {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    if n.is_empty() || n.len() > h.len() {
        return None;
    }
    (0..=h.len() - n.len()).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: Alice <alice@x.test>\r\nTo: Bob <BOB@y.test>, carol@z.test\r\nCc: dave@w.test\r\nSubject: [secure] Quarterly figures\r\nX-Sealgate-Encrypt: required\r\n\r\nbody [secure]\r\n";

    #[test]
    fn facts_of_a_message() {
        let f = read(MSG, &Limits::default()).unwrap();
        assert_eq!(f.from_fields, 1);
        assert_eq!(f.from_mailboxes, ["alice@x.test"]);
        assert_eq!(f.visible, ["bob@y.test", "carol@z.test", "dave@w.test"]);
        assert!(!f.protection.is_protected());
    }

    #[test]
    fn trigger_search_is_safe_on_any_utf8() {
        assert_eq!(
            find_ignore_ascii_case("\u{212a} [SeCure] x", "[secure]"),
            Some(4)
        );
        assert_eq!(find_ignore_ascii_case("\u{130}\u{130}", "[secure]"), None);
        let policy = PolicyConfig {
            subject_trigger: Some("[secure]".into()),
            ..PolicyConfig::default()
        };
        let msg = "Subject: \u{212a} [secure] \u{130}\r\n\r\nx\r\n";
        let (out, raised) =
            strip_triggers(msg.as_bytes().to_vec(), &policy, &Limits::default()).unwrap();
        assert!(raised);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Subject: \u{212a} \u{130}\r\n\r\nx\r\n"
        );
    }

    #[test]
    fn triggers_are_removed_and_raise() {
        let policy = PolicyConfig {
            subject_trigger: Some("[SECURE]".into()),
            ..PolicyConfig::default()
        };
        let (out, raised) = strip_triggers(MSG.to_vec(), &policy, &Limits::default()).unwrap();
        assert!(raised);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Subject: Quarterly figures\r\n"), "{text}");
        assert!(!text.to_lowercase().contains("x-sealgate-encrypt"));
        assert!(
            text.ends_with("\r\n\r\nbody [secure]\r\n"),
            "body untouched"
        );
        // Header trigger off: the header still never leaves, but does not raise.
        let policy = PolicyConfig {
            header_trigger: false,
            ..PolicyConfig::default()
        };
        let (out, raised) = strip_triggers(MSG.to_vec(), &policy, &Limits::default()).unwrap();
        assert!(!raised);
        assert!(!String::from_utf8_lossy(&out)
            .to_lowercase()
            .contains("x-sealgate-encrypt"));
        assert!(String::from_utf8_lossy(&out).contains("Subject: [secure] Quarterly"));
        // Nothing to strip: the very same bytes.
        let plain = b"Subject: hi\r\n\r\nx\r\n";
        assert_eq!(
            strip_triggers(plain.to_vec(), &policy, &Limits::default()).unwrap(),
            (plain.to_vec(), false)
        );
    }

    fn trigger_policy() -> PolicyConfig {
        PolicyConfig {
            subject_trigger: Some("[secure]".into()),
            ..PolicyConfig::default()
        }
    }

    /// The subject of `message` after stripping, decoded, and whether the trigger fired.
    fn stripped_subject(message: &str) -> (String, bool) {
        let (out, raised) = strip_triggers(
            message.as_bytes().to_vec(),
            &trigger_policy(),
            &Limits::default(),
        )
        .unwrap();
        let parsed = mime::parse_message(&out, &Limits::default()).unwrap();
        let subject = parsed.field("Subject").expect("subject kept");
        assert!(subject.raw_value().is_ascii() || !message.is_ascii());
        assert!(subject.longest_line() <= mime::MAX_LINE);
        (mime::decode_unstructured(subject.raw_value()), raised)
    }

    #[test]
    fn subject_trigger_in_encoded_words() {
        for raw in [
            "=?UTF-8?Q?=5Bsecure=5D_Gr=C3=BC=C3=9Fe?=",
            "=?utf-8?B?W3NlY3VyZV0gR3LDvMOfZQ==?=",
            "=?UTF-8?Q?=5Bsec?=\r\n =?UTF-8?Q?ure=5D_Gr=C3=BC=C3=9Fe?=",
            "=?ISO-8859-1?Q?=5BSECURE=5D_Gr=FC=DFe?=",
        ] {
            let (subject, raised) = stripped_subject(&format!("Subject: {raw}\r\n\r\nbody\r\n"));
            assert!(raised, "{raw}");
            assert_eq!(subject, "Gr\u{fc}\u{df}e", "{raw}");
        }
        // Encoded words without the tag: untouched, not raised.
        let msg = "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\r\nx\r\n";
        let (out, raised) = strip_triggers(
            msg.as_bytes().to_vec(),
            &trigger_policy(),
            &Limits::default(),
        )
        .unwrap();
        assert!(!raised);
        assert_eq!(out, msg.as_bytes());
    }

    /// SECURITY.md I14: a client cannot forge a field sealgate adds.
    #[test]
    fn our_fields_are_never_taken_from_the_client() {
        let msg = b"From: a@x.test\r\nX-Sealgate-Result: encrypted=smime; signed=yes\r\nx-sealgate-anything: 1\r\nX-Sealgate-Encrypt: no\r\nX-Sealgatey: kept\r\n\r\nX-Sealgate-Result: in the body stays\r\n";
        let (out, raised) =
            strip_triggers(msg.to_vec(), &PolicyConfig::default(), &Limits::default()).unwrap();
        assert!(!raised);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "From: a@x.test\r\nX-Sealgatey: kept\r\n\r\nX-Sealgate-Result: in the body stays\r\n"
        );
    }
}
