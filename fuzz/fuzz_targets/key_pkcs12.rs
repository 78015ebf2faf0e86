//! Private S/MIME identity import from PKCS#12 (`keys import --private file.p12`):
//! `private::parse` on one non-PEM, non-OpenPGP file with the demo passphrase, then
//! `NewKey::from_private`. No panic, no unbounded work, errors as values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::store::{private, x509, NewKey};
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let now = x509::from_unix(1_750_000_000);
    let inputs = [("fuzz.p12".to_string(), Zeroizing::new(data.to_vec()))];
    let pw = Zeroizing::new(b"demo-passphrase".to_vec());
    let Ok(ids) = private::parse(&inputs, Some(&pw)) else {
        return;
    };
    for id in ids {
        let _ = NewKey::from_private(id, now);
    }
});
