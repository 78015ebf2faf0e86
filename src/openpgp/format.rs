//! Which encrypted-data packet and cipher to use: a pure function of what
//! every recipient advertises (and of what our crypto backend implements).
//!
//! - SEIPDv2 (AEAD) only when EVERY recipient advertises it in its
//!   Features, and an AEAD mode is available that every recipient accepts:
//!   OCB (mandatory to implement in RFC 9580, so implied for everyone) or a
//!   mode each recipient lists in its AEAD ciphersuite preferences.
//!   Otherwise SEIPDv1 with MDC, which all RFC 9580 implementations read.
//! - Never the unprotected SED packet (sequoia cannot even emit it).
//! - AES-256 when every recipient lists it, otherwise AES-128 (implemented
//!   by everything that matters; we never fall back to 3DES or CAST5).

use sequoia_openpgp::types::{AEADAlgorithm, SymmetricAlgorithm};

use super::keys::Capabilities;

/// The format of the encrypted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFormat {
    /// SEIPD version 1 with MDC (RFC 4880), readable by GnuPG 2.2.
    SeipdV1 {
        /// The symmetric cipher.
        cipher: SymmetricAlgorithm,
    },
    /// SEIPD version 2 with AEAD (RFC 9580).
    SeipdV2 {
        /// The symmetric cipher.
        cipher: SymmetricAlgorithm,
        /// The AEAD mode.
        aead: AEADAlgorithm,
    },
}

impl MessageFormat {
    /// The symmetric cipher.
    pub fn cipher(&self) -> SymmetricAlgorithm {
        match self {
            MessageFormat::SeipdV1 { cipher } | MessageFormat::SeipdV2 { cipher, .. } => *cipher,
        }
    }
}

/// AEAD modes in our order of preference.
const AEAD_MODES: [AEADAlgorithm; 3] = [AEADAlgorithm::OCB, AEADAlgorithm::GCM, AEADAlgorithm::EAX];

/// Chooses the message format for `recipients` (one entry per certificate,
/// including the sender's own when encrypting to self). `backend_supports`
/// says whether our backend implements an AEAD mode (injected so that the
/// rule is testable whatever the backend).
pub fn choose(
    recipients: &[Capabilities],
    backend_supports: impl Fn(AEADAlgorithm) -> bool,
) -> MessageFormat {
    let all_v2 = !recipients.is_empty()
        && recipients
            .iter()
            .all(|c| c.features.as_ref().is_some_and(|f| f.supports_seipdv2()));

    if all_v2 {
        let cipher = if recipients.iter().all(|c| {
            lists(&c.symmetric, SymmetricAlgorithm::AES256)
                || c.aead
                    .as_ref()
                    .is_some_and(|a| a.iter().any(|(s, _)| *s == SymmetricAlgorithm::AES256))
        }) {
            SymmetricAlgorithm::AES256
        } else {
            SymmetricAlgorithm::AES128
        };
        let accepted_by_all = |mode: AEADAlgorithm| {
            recipients.iter().all(|c| {
                mode == AEADAlgorithm::OCB
                    || c.aead
                        .as_ref()
                        .is_some_and(|a| a.iter().any(|(_, m)| *m == mode))
            })
        };
        if let Some(aead) = AEAD_MODES
            .into_iter()
            .find(|m| backend_supports(*m) && accepted_by_all(*m))
        {
            return MessageFormat::SeipdV2 { cipher, aead };
        }
    }

    let cipher = if !recipients.is_empty()
        && recipients
            .iter()
            .all(|c| lists(&c.symmetric, SymmetricAlgorithm::AES256))
    {
        SymmetricAlgorithm::AES256
    } else {
        SymmetricAlgorithm::AES128
    };
    MessageFormat::SeipdV1 { cipher }
}

fn lists(prefs: &Option<Vec<SymmetricAlgorithm>>, algo: SymmetricAlgorithm) -> bool {
    prefs.as_ref().is_some_and(|p| p.contains(&algo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sequoia_openpgp::types::Features;
    use AEADAlgorithm::{EAX, GCM, OCB};
    use SymmetricAlgorithm::{Camellia128, Twofish, AES128, AES256};

    fn v1(sym: &[SymmetricAlgorithm]) -> Capabilities {
        Capabilities {
            features: Some(Features::empty().set_seipdv1()),
            symmetric: Some(sym.to_vec()),
            aead: None,
        }
    }
    fn v2(
        sym: &[SymmetricAlgorithm],
        aead: Option<&[(SymmetricAlgorithm, AEADAlgorithm)]>,
    ) -> Capabilities {
        Capabilities {
            features: Some(Features::empty().set_seipdv1().set_seipdv2()),
            symmetric: Some(sym.to_vec()),
            aead: aead.map(|a| a.to_vec()),
        }
    }
    fn all(_: AEADAlgorithm) -> bool {
        true
    }
    fn no_ocb(m: AEADAlgorithm) -> bool {
        m != OCB
    }

    #[test]
    fn v1_when_any_recipient_lacks_v2() {
        let caps = [v2(&[AES256], None), v1(&[AES256, AES128])];
        assert_eq!(
            choose(&caps, all),
            MessageFormat::SeipdV1 { cipher: AES256 }
        );
    }

    #[test]
    fn v1_when_features_absent() {
        let caps = [Capabilities::default()];
        assert_eq!(
            choose(&caps, all),
            MessageFormat::SeipdV1 { cipher: AES128 }
        );
    }

    #[test]
    fn v2_when_all_advertise_it() {
        let caps = [v2(&[AES256, AES128], None), v2(&[AES256], None)];
        assert_eq!(
            choose(&caps, all),
            MessageFormat::SeipdV2 {
                cipher: AES256,
                aead: OCB
            }
        );
    }

    #[test]
    fn v2_without_ocb_needs_a_mode_everyone_lists() {
        let gcm: &[_] = &[(AES256, GCM)];
        let eax_gcm: &[_] = &[(AES128, EAX), (AES256, GCM)];
        assert_eq!(
            choose(
                &[v2(&[AES256], Some(gcm)), v2(&[AES256], Some(eax_gcm))],
                no_ocb
            ),
            MessageFormat::SeipdV2 {
                cipher: AES256,
                aead: GCM
            }
        );
        // One recipient implies OCB only: fall back to v1 rather than guess.
        assert_eq!(
            choose(&[v2(&[AES256], Some(gcm)), v2(&[AES256], None)], no_ocb),
            MessageFormat::SeipdV1 { cipher: AES256 }
        );
    }

    #[test]
    fn aes128_unless_everyone_lists_aes256() {
        assert_eq!(
            choose(&[v1(&[AES256]), v1(&[AES128])], all),
            MessageFormat::SeipdV1 { cipher: AES128 }
        );
        assert_eq!(
            choose(&[v1(&[Camellia128, Twofish])], all),
            MessageFormat::SeipdV1 { cipher: AES128 }
        );
        assert_eq!(
            choose(&[v2(&[AES128], None), v2(&[AES256], None)], all),
            MessageFormat::SeipdV2 {
                cipher: AES128,
                aead: OCB
            }
        );
    }

    #[test]
    fn nobody_gives_v1() {
        assert_eq!(choose(&[], all), MessageFormat::SeipdV1 { cipher: AES128 });
    }
}
