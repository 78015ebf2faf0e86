//! Library-level tests of `KeyStore::lookup` / `signing_identity` with a moved `now`.

mod common;
use common::fx;

use std::time::{Duration, SystemTime};

use sealgate::store::{
    openpgp, private, x509, Address, KeyStore, NewKey, Purpose, SledStore, Unusable,
};

fn at(y: i32, m: u32, d: u32) -> SystemTime {
    // days from civil (Howard Hinnant)
    let y = if m <= 2 { y - 1 } else { y } as i64;
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    SystemTime::UNIX_EPOCH + Duration::from_secs(days as u64 * 86_400)
}

fn store() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(&dir.path().join("store"), Duration::from_secs(1)).unwrap();
    (dir, s)
}

fn import_file(s: &SledStore, name: &str) {
    let data = std::fs::read(fx(name)).unwrap();
    let now = SystemTime::now();
    let keys: Vec<NewKey> = if openpgp::looks_like_openpgp(&data) {
        openpgp::parse_certs(&data, &mut |_, _| {})
            .unwrap()
            .iter()
            .map(|c| NewKey::from_openpgp(c, now).unwrap())
            .collect()
    } else {
        x509::parse_certificates(&data, &mut |_, _| {})
            .unwrap()
            .iter()
            .map(|d| NewKey::from_x509(d, now).unwrap())
            .collect()
    };
    s.import(keys).unwrap();
}

fn addr(a: &str) -> Address {
    Address::parse(a).unwrap()
}

#[test]
fn x509_validity_window_moves_with_now() {
    let (_d, s) = store();
    import_file(&s, "bob-rsa2048.pem");
    import_file(&s, "dave-expired.pem");
    let bob = addr("bob@example.test");
    assert_eq!(s.lookup(&bob, at(2030, 1, 1)).unwrap().smime.len(), 1);
    let l = s.lookup(&bob, at(2023, 12, 31)).unwrap();
    assert!(l.smime.is_empty());
    assert!(matches!(l.unusable[0].1[0], Unusable::NotYetValid { .. }));
    let l = s.lookup(&bob, at(2046, 1, 1)).unwrap();
    assert!(matches!(l.unusable[0].1[0], Unusable::Expired { .. }));
    // dave was valid in 2020
    let dave = addr("dave@example.test");
    assert_eq!(s.lookup(&dave, at(2020, 6, 1)).unwrap().smime.len(), 1);
    assert!(s.lookup(&dave, SystemTime::now()).unwrap().smime.is_empty());
}

#[test]
fn wrong_address_is_reported_by_check_record() {
    let (_d, s) = store();
    import_file(&s, "frank-wrong-address.pem");
    import_file(&s, "peggy-ed25519.asc");
    let now = SystemTime::now();
    for r in s.list().unwrap() {
        let reasons = s
            .check_record(&r, &addr("someone@example.test"), now, Purpose::Encrypt)
            .unwrap();
        assert!(reasons.contains(&Unusable::WrongAddress), "{reasons:?}");
        let own = Address::parse(&r.addresses[0]).unwrap();
        assert!(s
            .check_record(&r, &own, now, Purpose::Encrypt)
            .unwrap()
            .is_empty());
    }
}

#[test]
fn openpgp_expiry_and_renewal_with_moved_now() {
    let (_d, s) = store();
    import_file(&s, "yvonne-expired.asc");
    let y = addr("yvonne@example.test");
    // created 2020-01-01, expired after one year
    assert_eq!(s.lookup(&y, at(2020, 6, 1)).unwrap().openpgp.len(), 1);
    assert!(s.lookup(&y, at(2019, 6, 1)).unwrap().openpgp.is_empty());
    let l = s.lookup(&y, SystemTime::now()).unwrap();
    assert!(l.unusable[0]
        .1
        .iter()
        .any(|r| matches!(r, Unusable::Expired { .. })));
    import_file(&s, "yvonne-renewed.asc");
    assert_eq!(s.lookup(&y, SystemTime::now()).unwrap().openpgp.len(), 1);
    assert_eq!(s.len(), 1);
}

#[test]
fn revocation_and_missing_subkey() {
    let (_d, s) = store();
    import_file(&s, "walter-revoked.asc");
    import_file(&s, "xavier-no-encryption-subkey.asc");
    let now = SystemTime::now();
    let l = s.lookup(&addr("walter@example.test"), now).unwrap();
    assert!(l.openpgp.is_empty());
    assert!(l.unusable[0]
        .1
        .iter()
        .any(|r| matches!(r, Unusable::Revoked(_))));
    let l = s.lookup(&addr("xavier@example.test"), now).unwrap();
    assert_eq!(l.unusable[0].1, vec![Unusable::NoEncryptionKey]);
}

#[test]
fn signing_identities() {
    let (_d, s) = store();
    let now = SystemTime::now();
    let pass = zeroize::Zeroizing::new(b"demo-passphrase".to_vec());
    for (file, pw) in [
        ("alice-smime-legacy.p12", Some(&pass)),
        ("alice-openpgp-secret.asc", None),
    ] {
        let data = zeroize::Zeroizing::new(std::fs::read(fx(file)).unwrap());
        let ids = private::parse(&[(file.to_string(), data)], pw).unwrap();
        let mut keys = Vec::new();
        for id in ids {
            assert!(!format!("{id:?}").contains("PRIVATE"));
            keys.extend(NewKey::from_private(id, now).unwrap());
        }
        s.import(keys).unwrap();
    }
    import_file(&s, "heidi-wrong-key-usage.pem");
    let a = addr("Alice@example.test");
    let si = s.signing_identity(&a, now).unwrap();
    assert_eq!(si.smime.len(), 1);
    assert_eq!(si.openpgp.len(), 1);
    assert_eq!(si.smime[0].chain.len(), 1, "the CA from the .p12");
    assert!(!format!("{si:?}").contains(&format!("{:?}", &si.smime[0].key[..8])));
    // expired in 2046
    let si = s.signing_identity(&a, at(2046, 1, 1)).unwrap();
    assert!(si.smime.is_empty());
    assert_eq!(si.openpgp.len(), 1);
    // a public certificate is never a signing identity
    assert!(s
        .signing_identity(&addr("heidi@example.test"), now)
        .unwrap()
        .smime
        .is_empty());
    // the S/MIME sender certificate is also a usable recipient certificate
    assert_eq!(s.lookup(&a, now).unwrap().smime.len(), 1);
}

#[test]
fn second_opener_is_told_the_store_is_locked() {
    let (d, _s) = store();
    match SledStore::open(&d.path().join("store"), Duration::from_millis(200)) {
        Err(sealgate::store::StoreError::Locked(_)) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a locked store"),
    }
}
