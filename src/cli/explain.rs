//! `sealgate policy explain`: what the policy would do for a sender and recipients, with the
//! same code the relay uses (key lookups through [`KeySource`], then the pure decisions).

use std::time::SystemTime;

use der::Encode;
use serde_json::{json, Value};
use sha2::Digest;

use crate::address::Address;
use crate::policy::{message_sign_mode, Outcome, SigningDecision};
use crate::smtp::command::PathWithParams;
use crate::transform::{
    decide_at_rcpt, plan_message, AcceptedRecipient, Envelope, KeySource, KeysUnavailable, Plan,
    Refusal, SenderKeys, Settings,
};

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Smime => "smime",
        Outcome::Openpgp => "openpgp",
        Outcome::Plain => "plain",
        Outcome::Refuse => "refuse",
    }
}

/// The explanation as JSON (the text form is rendered from it). Recipients are decided by
/// the relay's own RCPT-time function and the message by its planning function, on a short
/// text message from `from` to the recipients the relay would accept: one code path, so
/// explain cannot drift from what the relay does.
pub fn explain(
    settings: &Settings,
    keys: &dyn KeySource,
    from: &str,
    to: &[Address],
    now: SystemTime,
) -> Result<Value, KeysUnavailable> {
    let mut decided = Vec::new();
    for address in to {
        let path = PathWithParams {
            address: address.as_str().to_string(),
            params: Vec::new(),
        };
        decided.push(decide_at_rcpt(
            &settings.policy,
            keys,
            path,
            address.clone(),
            now,
        )?);
    }
    let recipients: Vec<Value> = decided.iter().map(recipient_json).collect();
    // Refused at RCPT: the message goes to the others.
    decided.retain(|r| r.decision.outcome != Outcome::Refuse);
    let envelope = Envelope {
        from,
        authenticated: None,
        sign_without_auth: true,
        recipients: &decided,
    };
    let planned = plan_message(
        sample_message(from, &decided),
        &envelope,
        settings,
        keys,
        now,
    );
    let (mode, signed, why, copies) = match planned {
        Ok(p) => {
            let (signed, why) = match p.signing {
                SigningDecision::Sign => ("yes", identities(&*keys.sender(from, now)?)),
                SigningDecision::Unsigned(w) | SigningDecision::Refuse(w) => ("no", w),
            };
            (
                format!("{:?}", p.sign_mode),
                signed,
                why,
                copies_json(&p.plan, &decided),
            )
        }
        Err(Refusal::KeysUnavailable(e)) => return Err(e),
        Err(refusal) => {
            let mode = message_sign_mode(
                &settings.policy,
                &decided.iter().map(|r| &r.address).collect::<Vec<_>>(),
            );
            (
                format!("{mode:?}"),
                "refuse",
                refusal.to_string(),
                Vec::new(),
            )
        }
    };
    Ok(json!({
        "from": from,
        "signing": {"mode": mode, "signed": signed, "reason": why.trim(),
                    "assumes": "one From mailbox equal to the envelope sender, and a client authenticated as that sender or on a listener with sign_without_auth"},
        "recipients": recipients,
        "copies": copies,
    }))
}

fn recipient_json(r: &AcceptedRecipient) -> Value {
    let d = &r.decision;
    let key = match d.outcome {
        Outcome::Smime => r.keys.smime.first().map(|c| {
            let fpr = c
                .to_der()
                .map(|der| hex(&sha2::Sha256::digest(der)))
                .unwrap_or_default();
            format!("x509:{fpr} ({})", c.tbs_certificate.subject)
        }),
        Outcome::Openpgp => r
            .keys
            .openpgp
            .first()
            .map(|k| format!("pgp:{}", k.cert().fingerprint())),
        _ => None,
    };
    json!({
        "address": r.address.as_str(),
        "rule": d.rule_match.as_ref().map(|m| json!({"index": d.rule, "match": m})),
        "encrypt": format!("{:?}", d.encrypt).to_lowercase(),
        "format": format!("{:?}", d.format).to_lowercase(),
        "outcome": outcome_name(d.outcome),
        "key": key,
        "reason": d.reason,
        "unusable": r.keys.unusable,
    })
}

/// The copies the relay would send: format, signed or not, and to whom.
fn copies_json(plan: &Plan, recipients: &[AcceptedRecipient]) -> Vec<Value> {
    let names = |idx: &[usize]| -> Vec<&str> {
        idx.iter()
            .filter_map(|&i| recipients.get(i).map(|r| r.address.as_str()))
            .collect()
    };
    match plan {
        Plan::Passthrough(_) => {
            let all: Vec<usize> = (0..recipients.len()).collect();
            vec![json!({"format": "as is", "signed": false, "recipients": names(&all)})]
        }
        Plan::Copies(sealing) => (0..sealing.len())
            .filter_map(|i| {
                let (seal, signed) = sealing.format(i)?;
                Some(json!({"format": outcome_name(seal), "signed": signed,
                            "recipients": names(sealing.recipients(i))}))
            })
            .collect(),
    }
}

/// A short text message as a client would send it: one From mailbox (the sender), the
/// recipients in To.
fn sample_message(from: &str, recipients: &[AcceptedRecipient]) -> Vec<u8> {
    let to: Vec<String> = recipients
        .iter()
        .map(|r| format!("<{}>", r.address.as_str()))
        .collect();
    let from = if from.is_empty() {
        "<>".to_string()
    } else {
        format!("<{from}>")
    };
    format!(
        "From: {from}\r\nTo: {}\r\nSubject: policy explain\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\npolicy explain\r\n",
        if to.is_empty() {
            "undisclosed-recipients:;".to_string()
        } else {
            to.join(", ")
        }
    )
    .into_bytes()
}

fn identities(sender: &SenderKeys) -> String {
    let mut names = Vec::new();
    if sender.smime.is_some() {
        names.push("S/MIME");
    }
    if sender.openpgp.is_some() {
        names.push("OpenPGP");
    }
    format!("identities: {}", names.join(" "))
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
    for c in v["copies"].as_array().into_iter().flatten() {
        let to: Vec<String> = c["recipients"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let signed = if c["signed"].as_bool() == Some(true) {
            ", signed"
        } else {
            ""
        };
        out.push_str(&format!(
            "copy {}{signed}: {}\n",
            s(&c["format"]),
            to.join(", ")
        ));
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
            &Settings::new(&config.policy, config.limits.mime.clone()),
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
