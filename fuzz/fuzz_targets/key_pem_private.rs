//! Private S/MIME identity import from PEM (`keys import --private key.pem cert.pem`): PKCS#8
//! (plain and encrypted), PKCS#1 RSA and SEC1 EC keys with certificates. The input is split in
//! two files at the first byte 0xFF (if any), as a key file and a certificate file.
//! No panic, no unbounded work, errors as values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::store::{private, x509, NewKey};
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let now = x509::from_unix(1_750_000_000);
    let inputs: Vec<(String, Zeroizing<Vec<u8>>)> = data
        .splitn(2, |&b| b == 0xFF)
        .enumerate()
        .map(|(i, d)| (format!("file{i}.pem"), Zeroizing::new(d.to_vec())))
        .collect();
    let pw = Zeroizing::new(b"demo-passphrase".to_vec());
    let Ok(ids) = private::parse(&inputs, Some(&pw)) else {
        return;
    };
    for id in ids {
        let _ = NewKey::from_private(id, now);
    }
});
