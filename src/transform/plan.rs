//! Planning the copies of one message (pure): one copy per sealing format for the visible
//! recipients, and one copy of its own for every encrypted Bcc recipient, so no copy seen by
//! To/Cc recipients names a Bcc recipient's key (SECURITY.md I7).

use crate::policy::Outcome;

/// One upstream transaction: these recipients (indexes into the transaction's recipient list)
/// get the message sealed this way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    pub recipients: Vec<usize>,
    pub seal: Outcome,
}

/// `recipients`: (match key, outcome) in RCPT order; `visible`: match keys of the To/Cc
/// addresses (see [`crate::address::Address::key`]).
/// Refused recipients never reach this point.
pub fn plan_copies(recipients: &[(String, Outcome)], visible: &[String]) -> Vec<CopyPlan> {
    let mut copies: Vec<CopyPlan> = Vec::new();
    for (i, (address, outcome)) in recipients.iter().enumerate() {
        let bcc = !visible.iter().any(|v| v == address);
        let own_copy = bcc && matches!(outcome, Outcome::Smime | Outcome::Openpgp);
        if !own_copy {
            if let Some(c) = copies
                .iter_mut()
                .find(|c| c.seal == *outcome && !c.is_bcc_copy(recipients, visible))
            {
                c.recipients.push(i);
                continue;
            }
        }
        copies.push(CopyPlan {
            recipients: vec![i],
            seal: *outcome,
        });
    }
    copies
}

impl CopyPlan {
    fn is_bcc_copy(&self, recipients: &[(String, Outcome)], visible: &[String]) -> bool {
        matches!(self.seal, Outcome::Smime | Outcome::Openpgp)
            && self.recipients.len() == 1
            && self
                .recipients
                .first()
                .and_then(|&i| recipients.get(i))
                .is_some_and(|(a, _)| !visible.iter().any(|v| v == a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    fn r(list: &[(&str, Outcome)]) -> Vec<(String, Outcome)> {
        list.iter().map(|(a, o)| (a.to_string(), *o)).collect()
    }

    #[test]
    fn groups_by_format_and_isolates_encrypted_bcc() {
        let recipients = r(&[
            ("a@x", Smime),
            ("b@x", Openpgp),
            ("c@x", Plain),
            ("bcc1@x", Smime),
            ("d@x", Smime),
            ("bcc2@x", Plain),
            ("bcc3@x", Openpgp),
        ]);
        let visible: Vec<String> = ["a@x", "b@x", "c@x", "d@x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let plan = plan_copies(&recipients, &visible);
        assert_eq!(
            plan,
            vec![
                CopyPlan {
                    recipients: vec![0, 4],
                    seal: Smime
                },
                CopyPlan {
                    recipients: vec![1],
                    seal: Openpgp
                },
                CopyPlan {
                    recipients: vec![2, 5],
                    seal: Plain
                },
                CopyPlan {
                    recipients: vec![3],
                    seal: Smime
                },
                CopyPlan {
                    recipients: vec![6],
                    seal: Openpgp
                },
            ]
        );
        // Every recipient is in exactly one copy.
        let mut all: Vec<usize> = plan.iter().flat_map(|c| c.recipients.clone()).collect();
        all.sort();
        assert_eq!(all, (0..recipients.len()).collect::<Vec<_>>());
    }

    #[test]
    fn any_spelling_of_a_visible_address_is_visible_and_two_bcc_never_share() {
        let key = |a: &str| crate::address::Address::parse(a).unwrap().key().to_string();
        let recipients: Vec<(String, Outcome)> = ["\"A\"@X.", "c@x", "b1@x", "b2@x"]
            .iter()
            .map(|a| (key(a), Smime))
            .collect();
        let visible = vec![key("a@x"), key("C@X")];
        let plan = plan_copies(&recipients, &visible);
        assert_eq!(plan.len(), 3);
        assert_eq!(plan[0].recipients, [0, 1]);
        assert!(plan[1..].iter().all(|c| c.recipients.len() == 1));
    }

    #[test]
    fn all_plain_is_one_copy() {
        let recipients = r(&[("a@x", Plain), ("hidden@x", Plain)]);
        assert_eq!(
            plan_copies(&recipients, &["a@x".into()]),
            vec![CopyPlan {
                recipients: vec![0, 1],
                seal: Plain
            }]
        );
    }
}
