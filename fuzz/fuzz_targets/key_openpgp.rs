//! OpenPGP key import: certificates and keyrings (`keys import`) and secret keys (TSK,
//! `keys import --private`): `openpgp::parse_certs`, `NewKey::from_openpgp`, the facts and
//! usability checks at a fixed time, and unlocking with a passphrase.
//! No panic, no unbounded work, errors as values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::address::Address;
use sealgate::store::{openpgp, x509, NewKey, Purpose};

fuzz_target!(|data: &[u8]| {
    let now = x509::from_unix(1_750_000_000);
    if !openpgp::looks_like_openpgp(data) {
        return;
    }
    let Ok(certs) = openpgp::parse_certs(data, &mut |_, _| {}) else {
        return;
    };
    for cert in certs.into_iter().take(4) {
        let _ = NewKey::from_openpgp(&cert, now);
        let info = openpgp::info(&cert);
        let _ = openpgp::usage_summary(&cert, now);
        let _ = openpgp::validity(&cert, now);
        for a in info.addresses.iter().take(4) {
            let a = Address::parse(a).expect("stored addresses are normalised");
            let _ = openpgp::check(&cert, &a, now, Purpose::Encrypt);
            let _ = openpgp::check(&cert, &a, now, Purpose::Sign);
        }
        if cert.is_tsk() {
            if let Ok(unlocked) = openpgp::unlock(cert, Some(b"demo-passphrase")) {
                let _ = NewKey::from_private(
                    sealgate::store::PrivateIdentity::OpenPgp(Box::new(unlocked)),
                    now,
                );
            }
        }
    }
});
