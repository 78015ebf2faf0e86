//! `sealgate keys ...`: the definitions (clap) first, then what each command does.
//!
//! Exit status: 0 on success, 1 on any failure (the message on stderr names the file or key),
//! 2 for usage errors (clap). Nothing is written to the store unless every input file parsed:
//! a corrupt or truncated file leaves the store untouched.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::store::{
    fmt_time, openpgp, pem, private, x509, Address, Details, KeyId, KeyRecord, KeyStore, NewKey,
    Purpose, SledStore, StoreError, Unusable,
};

/// Largest input file accepted (a bundle of 10,000 certificates is about 15 MB).
pub const MAX_INPUT: u64 = 256 * 1024 * 1024;
/// How long a command waits for a store held by another process.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Key management commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Import certificates (public) or, with --private, a sender's signing identity.
    ///
    /// Formats are detected per file: X.509 certificates in PEM (one or a bundle) or DER,
    /// PKCS#7/CMS bundles (.p7b/.p7c, PEM or DER), OpenPGP certificates and keyrings (armored
    /// or binary). With --private: PKCS#12 (.p12/.pfx), a PEM private key with its
    /// certificate (one file, or the key file and the certificate file), or an OpenPGP secret
    /// key (TSK). Importing a key again updates it (new expiry, revocation) instead of adding
    /// a duplicate. If any file fails to parse, nothing is imported.
    #[command(after_help = "\
Examples:
  sealgate keys import --config sealgate.toml bob.pem carol-bundle.pem partners.p7b
  sealgate keys import --config sealgate.toml dave.asc keyring.gpg
  sealgate keys import --config sealgate.toml --private alice.p12 --passphrase-file alice.pass
  sealgate keys import --config sealgate.toml --private alice.key alice.crt
  sealgate keys import --config sealgate.toml --private alice-secret.asc")]
    Import {
        /// Import a private signing identity (secret key) instead of public certificates.
        #[arg(long)]
        private: bool,
        /// File whose first line is the passphrase (PKCS#12, encrypted PKCS#8, OpenPGP).
        #[arg(long, value_name = "F", requires = "private")]
        passphrase_file: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Files to import.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// List every stored key: id, kind, addresses, validity, usage.
    #[command(after_help = "\
Examples:
  sealgate keys list --config sealgate.toml
  sealgate keys list --config sealgate.toml --json | jq '.[] | select(.state != \"valid\")'")]
    List {
        /// Print JSON (an array of objects).
        #[arg(long)]
        json: bool,
    },
    /// Show what is usable for an address (and why other keys are not), or one key by id.
    ///
    /// An argument with an "@" is an address; anything else is a key id, a fingerprint or a
    /// unique prefix of one (at least 8 hex digits), or a 16-digit OpenPGP key id.
    #[command(after_help = "\
Examples:
  sealgate keys show --config sealgate.toml bob@example.org
  sealgate keys show --config sealgate.toml x509:3f2a9c1b
  sealgate keys show --config sealgate.toml 0x1234ABCD5678EF90 --json")]
    Show {
        /// Address or key id.
        #[arg(value_name = "ADDRESS|ID")]
        query: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the public part of a key: PEM for X.509, ASCII armor for OpenPGP.
    #[command(after_help = "\
Examples:
  sealgate keys export --config sealgate.toml x509:3f2a9c1b > bob.pem
  sealgate keys export --config sealgate.toml pgp:A1B2C3D4E5F60718 > dave.asc")]
    Export {
        /// Key id (or unique prefix).
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Remove a key. A private identity (sender secret key) is only removed with --force.
    #[command(after_help = "\
Examples:
  sealgate keys remove --config sealgate.toml x509:3f2a9c1b
  sealgate keys remove --config sealgate.toml --force pgp:A1B2C3D4E5F60718   # a sender identity")]
    Remove {
        /// Key id (or unique prefix).
        #[arg(value_name = "ID")]
        id: String,
        /// Also remove a private identity (its secret key is deleted for good).
        #[arg(long)]
        force: bool,
    },
}

/// A failure, already worded for the user.
struct Fail(String);

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail(e.to_string())
    }
}

/// Runs one `keys` command against the store at `store_path`; `trust_anchors` is the
/// `[smime] trust_anchors` file, if configured; `now` is the time for every validity check.
pub fn run(
    cmd: KeysCommand,
    store_path: &Path,
    trust_anchors: Option<&Path>,
    now: SystemTime,
) -> ExitCode {
    let name = match &cmd {
        KeysCommand::Import { .. } => "import",
        KeysCommand::List { .. } => "list",
        KeysCommand::Show { .. } => "show",
        KeysCommand::Export { .. } => "export",
        KeysCommand::Remove { .. } => "remove",
    };
    match run_inner(cmd, store_path, trust_anchors, now) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg)) => {
            eprintln!("sealgate keys {name}: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn open(store_path: &Path, trust_anchors: Option<&Path>) -> Result<SledStore, Fail> {
    let anchors =
        match trust_anchors {
            Some(p) => {
                let data = read_file(p)?;
                Some(x509::load_anchors(&data).map_err(|e| {
                    Fail(format!("{}: trust anchors: {}", p.display(), strip_what(e)))
                })?)
            }
            None => None,
        };
    // Before anything is written (the request below included): a store of another user,
    // e.g. root on the service's store, is refused with the command to run instead.
    crate::store::check_owner(store_path, Some("keys"))?;
    let store = crate::store::sled_store::open_for_command(store_path, LOCK_WAIT)?;
    Ok(store.with_trust_anchors(anchors))
}

fn strip_what(e: StoreError) -> String {
    match e {
        StoreError::Parse { reason, .. } => reason,
        e => e.to_string(),
    }
}

fn run_inner(
    cmd: KeysCommand,
    store_path: &Path,
    trust_anchors: Option<&Path>,
    now: SystemTime,
) -> Result<(), Fail> {
    let open_store = || open(store_path, trust_anchors);
    match cmd {
        KeysCommand::Import {
            private,
            passphrase_file,
            json,
            files,
        } => {
            // Every file is parsed before the store is opened: a bad file leaves it untouched.
            let keys = if private {
                parse_private(&files, passphrase_file.as_deref(), now)?
            } else {
                parse_public(&files, now)?
            };
            import(&open_store()?, keys, json)
        }
        KeysCommand::List { json } => list(&open_store()?, now, json),
        KeysCommand::Show { query, json } => {
            let store = open_store()?;
            if query.contains('@') {
                let address = Address::parse(&query).map_err(|e| Fail(e.to_string()))?;
                show_address(&store, &address, now, json)
            } else {
                let id = resolve(&store, &query)?;
                show_id(&store, &id, now, json)
            }
        }
        KeysCommand::Export { id } => export(&open_store()?, &id),
        KeysCommand::Remove { id, force } => remove(&open_store()?, &id, force),
    }
}

/// `keys import`: writes the parsed keys and reports what was added and what updated.
fn import(store: &SledStore, keys: Vec<NewKey>, json: bool) -> Result<(), Fail> {
    let n = keys.len();
    if n >= 1000 {
        eprintln!("writing {n} keys to the store ...");
    }
    let report = store.import(keys)?;
    if json {
        print_json(&json!({
            "added": report.added,
            "updated": report.updated,
        }));
        return Ok(());
    }
    // Large imports list only the counts.
    if report.added.len() <= 50 {
        for id in &report.added {
            println!("added   {id}");
        }
    }
    if report.updated.len() <= 50 {
        for id in &report.updated {
            println!("updated {id}");
        }
    }
    println!(
        "imported {} key(s): {} added, {} updated",
        report.added.len() + report.updated.len(),
        report.added.len(),
        report.updated.len()
    );
    Ok(())
}

/// `keys list`: one row per stored key (or a JSON array of the same summaries).
fn list(store: &SledStore, now: SystemTime, json: bool) -> Result<(), Fail> {
    let records = store.list()?;
    let rows: Vec<Value> = records.iter().map(|r| summary(r, now)).collect();
    if json {
        print_json(&Value::Array(rows));
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<18} {:<8} {:<13} {:<10} {:<14} ADDRESSES",
        "ID", "KIND", "STATE", "EXPIRES", "USAGE"
    );
    for (r, row) in records.iter().zip(&rows) {
        let id = r.id.as_str();
        let short = &id[..id.len().min(18)];
        let exp = row["not_after"]
            .as_u64()
            .map(|t| fmt_time(t)[..10].to_string())
            .unwrap_or_else(|| "never".into());
        let usage = format!(
            "{}{}",
            row["usage"].as_str().unwrap_or(""),
            if r.has_secret { "+secret" } else { "" }
        );
        let _ = writeln!(
            out,
            "{:<18} {:<8} {:<13} {:<10} {:<14} {}",
            short,
            r.kind(),
            row["state"].as_str().unwrap_or(""),
            exp,
            usage,
            r.addresses.join(", ")
        );
    }
    let _ = writeln!(out, "{} key(s)", records.len());
    Ok(())
}

/// The stored record for a user-given id (see [`resolve`]).
fn get(store: &SledStore, query: &str) -> Result<KeyRecord, Fail> {
    let id = resolve(store, query)?;
    store.get(&id)?.ok_or_else(|| Fail(format!("no key {id}")))
}

/// `keys export`: the public part, PEM for X.509 and ASCII armor for OpenPGP.
fn export(store: &SledStore, query: &str) -> Result<(), Fail> {
    let rec = get(store, query)?;
    let id = &rec.id;
    let text = match rec.details {
        Details::Smime(_) => pem::encode("CERTIFICATE", &rec.public),
        Details::Openpgp(_) => {
            let cert = openpgp::from_bytes(&rec.public).map_err(|e| Fail(format!("{id}: {e}")))?;
            openpgp::armored_public(&cert).map_err(|e| Fail(format!("{id}: {e}")))?
        }
    };
    print!("{text}");
    Ok(())
}

/// `keys remove`: a private signing identity only with `force`.
fn remove(store: &SledStore, query: &str, force: bool) -> Result<(), Fail> {
    let rec = get(store, query)?;
    let id = &rec.id;
    if rec.has_secret && !force {
        return Err(Fail(format!(
            "{id} is a private signing identity ({}); its secret key would be deleted \
             for good: repeat with --force to remove it",
            rec.addresses.join(", ")
        )));
    }
    store.remove(id)?;
    println!("removed {id}");
    Ok(())
}

fn print_json(v: &Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("cannot encode JSON: {e}"),
    }
}

fn read_file(p: &Path) -> Result<Vec<u8>, Fail> {
    let name = p.display();
    let meta = std::fs::metadata(p).map_err(|e| Fail(format!("{name}: {e}")))?;
    if !meta.is_file() {
        return Err(Fail(format!("{name}: not a regular file")));
    }
    if meta.len() > MAX_INPUT {
        return Err(Fail(format!(
            "{name}: larger than {} MiB",
            MAX_INPUT / 1024 / 1024
        )));
    }
    let data = std::fs::read(p).map_err(|e| Fail(format!("{name}: {e}")))?;
    if data.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Fail(format!("{name}: file is empty")));
    }
    Ok(data)
}

/// Parses every file; any failure fails the whole command before the store is touched.
fn parse_public(files: &[PathBuf], now: SystemTime) -> Result<Vec<NewKey>, Fail> {
    let mut keys = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match parse_public_file(f, now) {
            Ok(mut k) => keys.append(&mut k),
            Err(Fail(e)) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(Fail(format!("{}\nnothing was imported", errors.join("\n"))));
    }
    Ok(keys)
}

fn parse_public_file(f: &Path, now: SystemTime) -> Result<Vec<NewKey>, Fail> {
    let name = f.display().to_string();
    let data = read_file(f)?;
    let big = data.len() > 1024 * 1024;
    let mut last = 0usize;
    let mut progress = |done: usize, total: usize| {
        if big && (done - last >= 1000 || (total > 0 && done == total)) {
            last = done;
            if total > 0 {
                eprintln!("{name}: read {done}/{total}");
            } else {
                eprintln!("{name}: read {done}");
            }
        }
    };
    let fail = |reason: String| Fail(format!("{name}: {reason}"));
    if openpgp::looks_like_openpgp(&data) {
        let certs = openpgp::parse_certs(&data, &mut progress).map_err(fail)?;
        let mut out = Vec::with_capacity(certs.len());
        for c in certs {
            if c.is_tsk() {
                return Err(fail(format!(
                    "{} contains secret key material; sender identities are imported with \
                     `keys import --private`",
                    c.fingerprint()
                )));
            }
            out.push(NewKey::from_openpgp(&c, now).map_err(fail)?);
        }
        Ok(out)
    } else if pem::looks_like_pem(&data) || data.first() == Some(&0x30) {
        let ders = x509::parse_certificates(&data, &mut progress).map_err(|e| {
            if data.first() == Some(&0x30) {
                fail(format!(
                    "{e} (a PKCS#12 file is imported with `keys import --private`)"
                ))
            } else {
                fail(e)
            }
        })?;
        let total = ders.len();
        let mut out = Vec::with_capacity(total);
        for (i, d) in ders.iter().enumerate() {
            let k = NewKey::from_x509(d, now)
                .map_err(|e| fail(format!("certificate {} of {total}: {e}", i + 1)))?;
            out.push(k);
        }
        Ok(out)
    } else {
        Err(fail(
            "unrecognised format (expected PEM, DER, PKCS#7/CMS or OpenPGP)".into(),
        ))
    }
}

fn parse_private(
    files: &[PathBuf],
    passphrase_file: Option<&Path>,
    now: SystemTime,
) -> Result<Vec<NewKey>, Fail> {
    let passphrase = match passphrase_file {
        Some(p) => {
            let raw = Zeroizing::new(
                std::fs::read(p).map_err(|e| Fail(format!("{}: {e}", p.display())))?,
            );
            let line = raw.split(|b| *b == b'\n').next().unwrap_or(&[]);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Some(Zeroizing::new(line.to_vec()))
        }
        None => None,
    };
    let mut inputs = Vec::new();
    for f in files {
        inputs.push((f.display().to_string(), Zeroizing::new(read_file(f)?)));
    }
    let ids = private::parse(&inputs, passphrase.as_ref()).map_err(Fail)?;
    let mut out = Vec::new();
    for id in ids {
        out.extend(NewKey::from_private(id, now).map_err(Fail)?);
    }
    Ok(out)
}

/// Resolves a user-given id (full id, fingerprint, unique prefix, OpenPGP key id).
fn resolve(store: &SledStore, query: &str) -> Result<KeyId, Fail> {
    if let Some(id) = KeyId::parse(query) {
        if store.get(&id)?.is_some() {
            return Ok(id);
        }
    }
    let digits = query.chars().filter(|c| c.is_ascii_hexdigit()).count();
    if digits < 8 {
        return Err(Fail(format!(
            "{query:?}: give a key id or at least 8 hex digits of a fingerprint"
        )));
    }
    let found = store.find(query)?;
    match found.as_slice() {
        [] => Err(Fail(format!("no key matches {query:?}"))),
        [one] => Ok(one.clone()),
        _ => Err(Fail(format!(
            "{query:?} is ambiguous: {}",
            found
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The state of a key at `now` for listings: validity window, state and usage.
fn summary(r: &KeyRecord, now: SystemTime) -> Value {
    let now_s = x509::unix_secs(now);
    match &r.details {
        Details::Smime(i) => {
            let state = if now_s < i.not_before {
                "not-yet-valid"
            } else if now_s > i.not_after {
                "expired"
            } else {
                "valid"
            };
            json!({
                "id": r.id, "kind": r.kind(), "addresses": r.addresses,
                "subject": i.subject, "issuer": i.issuer, "key": i.key.to_string(),
                "not_before": i.not_before, "not_after": i.not_after,
                "state": state, "usage": i.usage_summary(), "secret": r.has_secret,
            })
        }
        Details::Openpgp(p) => {
            let (exp, state, usage) = match openpgp::from_bytes(&r.public) {
                Ok(c) => {
                    let (exp, state) = openpgp::validity(&c, now);
                    (exp, state, openpgp::usage_summary(&c, now))
                }
                Err(e) => (None, format!("corrupt: {e}"), "none".into()),
            };
            json!({
                "id": r.id, "kind": r.kind(), "addresses": r.addresses,
                "userids": p.userids, "key": p.algorithm,
                "not_before": p.created, "not_after": exp,
                "state": state, "usage": usage, "secret": r.has_secret,
            })
        }
    }
}

fn reasons_json(reasons: &[Unusable]) -> Value {
    Value::Array(
        reasons
            .iter()
            .map(|r| json!({"code": r.code(), "message": r.to_string()}))
            .collect(),
    )
}

fn reasons_text(reasons: &[Unusable]) -> String {
    reasons
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn show_address(
    store: &SledStore,
    address: &Address,
    now: SystemTime,
    json: bool,
) -> Result<(), Fail> {
    let lookup = store.lookup(address, now)?;
    let signing = store.signing_identity(address, now)?;
    if json {
        print_json(&json!({
            "address": address.as_str(),
            "smime": lookup.smime.iter().map(|c| json!({
                "id": c.id, "subject": c.info.subject, "key": c.info.key.to_string(),
                "not_after": c.info.not_after,
            })).collect::<Vec<_>>(),
            "openpgp": lookup.openpgp.iter().map(|c| json!({"id": c.id})).collect::<Vec<_>>(),
            "unusable": lookup.unusable.iter().map(|(id, r)| json!({
                "id": id, "reasons": reasons_json(r),
            })).collect::<Vec<_>>(),
            "signing": {
                "smime": signing.smime.iter().map(|s| json!({"id": s.id})).collect::<Vec<_>>(),
                "openpgp": signing.openpgp.iter().map(|s| json!({"id": s.id})).collect::<Vec<_>>(),
                "unusable": signing.unusable.iter().map(|(id, r)| json!({
                    "id": id, "reasons": reasons_json(r),
                })).collect::<Vec<_>>(),
            },
        }));
        return Ok(());
    }
    println!("{address} at {}", fmt_time(x509::unix_secs(now)));
    println!("encryption:");
    if lookup.is_empty() {
        println!("  no usable key");
    }
    for c in &lookup.smime {
        println!(
            "  usable   {}  S/MIME {}  {}  until {}",
            c.id,
            c.info.key,
            c.info.subject,
            fmt_time(c.info.not_after)
        );
    }
    for c in &lookup.openpgp {
        println!("  usable   {}  OpenPGP", c.id);
    }
    for (id, r) in &lookup.unusable {
        println!("  unusable {id}: {}", reasons_text(r));
    }
    if !signing.smime.is_empty() || !signing.openpgp.is_empty() || !signing.unusable.is_empty() {
        println!("signing (sender identities):");
        for s in &signing.smime {
            println!("  usable   {}  S/MIME", s.id);
        }
        for s in &signing.openpgp {
            println!("  usable   {}  OpenPGP", s.id);
        }
        for (id, r) in &signing.unusable {
            println!("  unusable {id}: {}", reasons_text(r));
        }
    }
    Ok(())
}

/// What a key is good for at one of its addresses: the reasons it cannot encrypt (empty when it
/// can) and, for a sender identity, the reasons it cannot sign.
struct AddressUse {
    address: Address,
    encrypt: Vec<Unusable>,
    sign: Option<Vec<Unusable>>,
}

fn show_id(store: &SledStore, id: &KeyId, now: SystemTime, json: bool) -> Result<(), Fail> {
    let rec = store.get(id)?.ok_or_else(|| Fail(format!("no key {id}")))?;
    let uses = address_uses(store, &rec, now)?;
    let summary = summary(&rec, now);
    if json {
        print_json(&id_json(&rec, summary, &uses));
    } else {
        print_id_details(&rec, &summary);
        print_address_uses(&uses);
    }
    Ok(())
}

/// Checks the key for each of its addresses (addresses that do not parse are skipped).
fn address_uses(
    store: &SledStore,
    rec: &KeyRecord,
    now: SystemTime,
) -> Result<Vec<AddressUse>, Fail> {
    let mut uses = Vec::new();
    for a in &rec.addresses {
        let Ok(address) = Address::parse(a) else {
            continue;
        };
        let encrypt = store.check_record(rec, &address, now, Purpose::Encrypt)?;
        let sign = if rec.has_secret {
            Some(store.check_record(rec, &address, now, Purpose::Sign)?)
        } else {
            None
        };
        uses.push(AddressUse {
            address,
            encrypt,
            sign,
        });
    }
    Ok(uses)
}

/// `keys show ID --json`: the listing's summary with the per-address checks and, for X.509,
/// the certificate's details.
fn id_json(rec: &KeyRecord, mut s: Value, uses: &[AddressUse]) -> Value {
    s["for"] = Value::Array(
        uses.iter()
            .map(|u| {
                json!({
                    "address": u.address.as_str(),
                    "encrypt": {"usable": u.encrypt.is_empty(), "reasons": reasons_json(&u.encrypt)},
                    "sign": u.sign.as_ref().map(|r| json!({
                        "usable": r.is_empty(), "reasons": reasons_json(r)
                    })),
                })
            })
            .collect(),
    );
    if let Details::Smime(i) = &rec.details {
        s["fingerprint_sha256"] = json!(i.fingerprint);
        s["serial"] = json!(i.serial);
        s["key_usage"] = json!(i.key_usage);
        s["extended_key_usage"] = json!(i.extended_key_usage);
        s["ca"] = json!(i.is_ca);
    }
    s
}

/// `keys show ID`: the key itself, one `name: value` line each.
fn print_id_details(rec: &KeyRecord, summary: &Value) {
    println!("id:        {}", rec.id);
    println!("kind:      {}", rec.kind());
    match &rec.details {
        Details::Smime(i) => {
            println!("subject:   {}", i.subject);
            println!("issuer:    {}", i.issuer);
            println!("serial:    {}", i.serial);
            println!("key:       {}", i.key);
            println!(
                "validity:  {} .. {}",
                fmt_time(i.not_before),
                fmt_time(i.not_after)
            );
            println!("usage:     {}", i.usage_summary());
            if let Some(e) = &i.extended_key_usage {
                println!("ext usage: {}", e.join(", "));
            }
        }
        Details::Openpgp(p) => {
            println!("key:       {}", p.algorithm);
            println!("created:   {}", fmt_time(p.created));
            for u in &p.userids {
                println!("user id:   {u}");
            }
            println!("state:     {}", summary["state"].as_str().unwrap_or(""));
            println!("usage:     {}", summary["usage"].as_str().unwrap_or(""));
        }
    }
    println!(
        "secret:    {}",
        if rec.has_secret {
            "yes (sender identity)"
        } else {
            "no"
        }
    );
}

/// `keys show ID`: whether the key can encrypt (and sign) for each of its addresses.
fn print_address_uses(uses: &[AddressUse]) {
    if uses.is_empty() {
        println!("addresses: none");
    }
    for u in uses {
        let a = &u.address;
        if u.encrypt.is_empty() {
            println!("{a}: usable for encryption");
        } else {
            println!(
                "{a}: not usable for encryption: {}",
                reasons_text(&u.encrypt)
            );
        }
        if let Some(r) = &u.sign {
            if r.is_empty() {
                println!("{a}: usable for signing");
            } else {
                println!("{a}: not usable for signing: {}", reasons_text(r));
            }
        }
    }
}
