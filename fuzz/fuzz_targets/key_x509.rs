//! Public S/MIME key import (what `keys import` does with a PEM, DER or PKCS#7/CMS file):
//! `x509::parse_certificates`, then `NewKey::from_x509` (which inspects each certificate) and
//! the usability check. No panic, no unbounded work, errors as values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::address::Address;
use sealgate::store::{x509, NewKey, Purpose};

fuzz_target!(|data: &[u8]| {
    let now = x509::from_unix(1_750_000_000);
    let Ok(ders) = x509::parse_certificates(data, &mut |_, _| {}) else {
        return;
    };
    assert!(!ders.is_empty());
    let anchors: Vec<Vec<u8>> = ders.iter().take(2).cloned().collect();
    for der in &ders {
        let Ok(key) = NewKey::from_x509(der, now) else {
            continue;
        };
        if let Ok((cert, info)) = x509::inspect(der) {
            let _ = info.usage_summary();
            for a in info.addresses.iter().take(4) {
                let a = Address::parse(a).expect("stored addresses are normalised");
                let _ = info.check(&a, now, Purpose::Encrypt);
                let _ = info.check(&a, now, Purpose::Sign);
            }
            let _ = x509::verify_chain(&cert, &anchors, &ders, now);
        }
        drop(key);
    }
});
