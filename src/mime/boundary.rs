//! Random multipart boundaries.

use rand::rngs::OsRng;
use rand::RngCore;

use super::canon::contains;
use super::MimeError;

/// A boundary with 128 random bits, checked to be absent from every slice of `contents`.
///
/// The `=_` prefix cannot occur in quoted-printable or base64 text, so a collision would need
/// the same 128 random bits to appear in a 7-bit part; the check makes it impossible anyway.
pub fn new_boundary(contents: &[&[u8]]) -> Result<String, MimeError> {
    for _ in 0..8 {
        let mut random = [0u8; 16];
        OsRng.fill_bytes(&mut random);
        let mut boundary = String::with_capacity(48);
        boundary.push_str("=_sealgate_");
        for b in random {
            boundary.push_str(&format!("{b:02x}"));
        }
        if !contents.iter().any(|c| contains(c, boundary.as_bytes())) {
            return Ok(boundary);
        }
    }
    Err(MimeError::BoundaryCollision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_random_and_absent() {
        let a = new_boundary(&[b"content"]).unwrap();
        let b = new_boundary(&[b"content"]).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), "=_sealgate_".len() + 32);
        assert!(a.len() <= 70, "RFC 2046 limit");
    }
}
