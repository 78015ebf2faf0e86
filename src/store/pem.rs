//! A small, strict PEM (RFC 7468) block reader: fast on bundles of many thousands of blocks,
//! and every decoded block is zeroized on drop (it may be a private key).

use base64::Engine;
use zeroize::Zeroizing;

/// One `-----BEGIN label-----` ... `-----END label-----` block.
pub struct PemBlock {
    /// The label, e.g. `CERTIFICATE`.
    pub label: String,
    /// The decoded contents.
    pub der: Zeroizing<Vec<u8>>,
}

/// True when the data (after leading white space) starts with a PEM boundary.
pub fn looks_like_pem(data: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    data[start..].starts_with(b"-----BEGIN ")
}

/// Every block in `data`, in order. Text outside blocks (openssl's "subject=..." comments) is
/// ignored; a block without its END line, with mismatched labels or bad base64 is an error
/// naming the block's number.
pub fn parse(data: &[u8]) -> Result<Vec<PemBlock>, String> {
    let text = std::str::from_utf8(data).map_err(|_| "PEM file is not valid text".to_string())?;
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|r| r.strip_suffix("-----"))
        else {
            continue;
        };
        let n = blocks.len() + 1;
        let end = format!("-----END {label}-----");
        let mut body = Zeroizing::new(String::new());
        let mut closed = false;
        for l in lines.by_ref() {
            let l = l.trim();
            if l == end {
                closed = true;
                break;
            }
            if l.starts_with("-----") {
                return Err(format!("PEM block {n} ({label}) ends with {l:?}"));
            }
            if l.contains(':') {
                return Err(format!(
                    "PEM block {n} ({label}) has RFC 1421 headers (legacy encrypted PEM?): \
                     convert it to PKCS#8 or PKCS#12"
                ));
            }
            body.push_str(l);
        }
        if !closed {
            return Err(format!("PEM block {n} ({label}) is truncated: no END line"));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|e| format!("PEM block {n} ({label}) has bad base64: {e}"))?;
        if der.is_empty() {
            return Err(format!("PEM block {n} ({label}) is empty"));
        }
        blocks.push(PemBlock {
            label: label.to_string(),
            der: Zeroizing::new(der),
        });
    }
    if blocks.is_empty() {
        return Err("no PEM block found".into());
    }
    Ok(blocks)
}

/// Encodes DER as PEM with the given label (64-column lines).
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
