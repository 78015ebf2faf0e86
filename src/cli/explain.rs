//! `sealgate policy explain`: what the policy would do for a sender and recipients, with the
//! same code the relay uses (key lookups through [`KeySource`], then the pure decisions).

use std::time::SystemTime;

use der::Encode;
use serde_json::{json, Value};
use sha2::Digest;

use crate::address::Address;
use crate::policy::{
    decide_recipient, decide_signing, message_sign_mode, Outcome, PolicyConfig, SenderFacts,
    SigningDecision,
};
use crate::transform::{KeySource, KeysUnavailable};

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Smime => "smime",
        Outcome::Openpgp => "openpgp",
        Outcome::Plain => "plain",
        Outcome::Refuse => "refuse",
    }
}

/// The explanation as JSON (the text form is rendered from it).
pub fn explain(
    policy: &PolicyConfig,
    keys: &dyn KeySource,
    from: &str,
    to: &[Address],
    now: SystemTime,
) -> Result<Value, KeysUnavailable> {
    let mut recipients = Vec::new();
    for address in to {
        let found = keys.recipient(address.as_str(), now)?;
        let d = decide_recipient(policy, address, &found.availability(), false);
        let key = match d.outcome {
            Outcome::Smime => found.smime.first().map(|c| {
                let fpr = c
                    .to_der()
                    .map(|der| hex(&sha2::Sha256::digest(der)))
                    .unwrap_or_default();
                format!("x509:{fpr} ({})", c.tbs_certificate.subject)
            }),
            Outcome::Openpgp => found
                .openpgp
                .first()
                .map(|r| format!("pgp:{}", r.cert().fingerprint())),
            _ => None,
        };
        recipients.push(json!({
            "address": address.as_str(),
            "rule": d.rule_match.as_ref().map(|m| json!({"index": d.rule, "match": m})),
            "encrypt": format!("{:?}", d.encrypt).to_lowercase(),
            "format": format!("{:?}", d.format).to_lowercase(),
            "outcome": outcome_name(d.outcome),
            "key": key,
            "reason": d.reason,
            "unusable": found.unusable,
        }));
    }
    let addresses: Vec<&Address> = to.iter().collect();
    let mode = message_sign_mode(policy, &addresses);
    let sender = keys.sender(from, now)?;
    let mailboxes = vec![from.to_string()];
    let signing = decide_signing(
        mode,
        &SenderFacts {
            envelope_from: from,
            from_fields: 1,
            from_mailboxes: &mailboxes,
            authenticated: None,
            sign_without_auth: true,
            identity: sender.any(),
        },
    );
    let (signed, why) = match signing {
        SigningDecision::Sign => (
            "yes",
            format!(
                "identities: {}{}",
                if sender.smime.is_some() {
                    "S/MIME "
                } else {
                    ""
                },
                if sender.openpgp.is_some() {
                    "OpenPGP"
                } else {
                    ""
                }
            ),
        ),
        SigningDecision::Unsigned(w) => ("no", w),
        SigningDecision::Refuse(w) => ("refuse", w),
    };
    Ok(json!({
        "from": from,
        "signing": {"mode": format!("{mode:?}"), "signed": signed, "reason": why.trim(),
                    "assumes": "one From mailbox equal to the envelope sender, and a client authenticated as that sender or on a listener with sign_without_auth"},
        "recipients": recipients,
    }))
}

/// Human-readable form.
pub fn render_text(v: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    for r in v["recipients"].as_array().into_iter().flatten() {
        let rule = match r["rule"].as_object() {
            Some(o) => format!("policy.rule[{}] ({})", o["index"], s(&o["match"])),
            None => "global [policy]".into(),
        };
        out.push_str(&format!(
            "{}\n  rule:    {rule}\n  encrypt: {}  format: {}\n  outcome: {}\n  key:     {}\n  why:     {}\n",
            s(&r["address"]),
            s(&r["encrypt"]),
            s(&r["format"]),
            s(&r["outcome"]),
            s(&r["key"]),
            s(&r["reason"]),
        ));
        for u in r["unusable"].as_array().into_iter().flatten() {
            out.push_str(&format!("  unusable: {}\n", s(u)));
        }
    }
    let sig = &v["signing"];
    out.push_str(&format!(
        "signing as {}: {} ({}; mode {})\n",
        s(&v["from"]),
        s(&sig["signed"]),
        s(&sig["reason"]),
        s(&sig["mode"])
    ));
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sealgate policy explain`: loads the configuration and the store, prints the explanation.
pub fn run(
    config: &std::path::Path,
    from: &str,
    to: &[String],
    json: bool,
) -> std::process::ExitCode {
    use crate::config::Config;
    use std::process::ExitCode;
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(2);
        }
    };
    // The same canonical form the relay decides on (RCPT parses the same way).
    let mut recipients = Vec::with_capacity(to.len());
    for a in to {
        match crate::address::Address::parse(a) {
            Ok(addr) => recipients.push(addr),
            Err(e) => {
                eprintln!("sealgate: --to {a:?}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let keys = crate::store::StoreKeys::open_for_command(
        config.store_path.clone(),
        config.smime_trust_anchors.as_deref(),
    );
    let result = keys.and_then(|k| {
        explain(
            &config.policy,
            k.as_ref(),
            from,
            &recipients,
            std::time::SystemTime::now(),
        )
    });
    match result {
        Ok(v) if json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", render_text(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sealgate: {e}");
            ExitCode::FAILURE
        }
    }
}
