//! `sealgate queue ...`: the definitions (clap) first, then what each command does.
//!
//! The commands work on the queue directory itself, so they work whether the server runs or
//! not. A change (retry, bounce) is written into the entry's metadata under the entry's claim;
//! a running server sees it at its next rescan (`[queue] scan_interval`, 5 s by default); a
//! stopped one when it starts. An entry being delivered at that very moment is reported busy.
//!
//! Exit status: 0 on success, 1 on failure (no such entry, busy, I/O), 2 for usage errors.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use crate::queue::store::{valid_id, QueueDir};
use crate::queue::{unix_now, Meta, RcptState};

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queued copies: id, age, attempts, next attempt, size, recipients, last reply.
    #[command(
        after_help = "Example:\n  sealgate queue list --config /etc/sealgate/sealgate.toml --json"
    )]
    List {
        /// Print the entries' metadata as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print one entry's metadata (never its content).
    #[command(
        after_help = "Example:\n  sealgate queue show --config sealgate.toml 0006650a1b2-9f3c..."
    )]
    Show { id: String },
    /// Make an entry (or every entry) due now.
    #[command(
        after_help = "Examples:\n  sealgate queue retry --config sealgate.toml ID\n  sealgate queue retry --config sealgate.toml --all"
    )]
    Retry {
        #[arg(required_unless_present = "all")]
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Delete an entry without delivering it and without a DSN.
    Remove { id: String },
    /// Return an entry to its sender now: its waiting recipients fail and a DSN goes out at
    /// the server's next rescan.
    Bounce { id: String },
}

/// Runs one `queue` command against the queue directory `dir`.
pub fn run(command: QueueCommand, dir: &Path) -> ExitCode {
    let queue = match QueueDir::existing(dir) {
        Ok(q) => q,
        // No directory yet: nothing was ever queued.
        Err(_) if matches!(command, QueueCommand::List { .. }) => {
            return list(&[], matches!(command, QueueCommand::List { json: true }))
        }
        Err(e) => return fail(&e.to_string()),
    };
    // Files written by another user (root on the service's queue) could not be read by the
    // server: every command that writes runs as the directory's owner.
    let writes = !matches!(
        command,
        QueueCommand::List { .. } | QueueCommand::Show { .. }
    );
    if writes {
        if let Err(e) = same_owner(dir) {
            return fail(&e);
        }
    }
    match command {
        QueueCommand::List { json } => list_queue(&queue, json),
        QueueCommand::Show { id } => show(&queue, &id),
        QueueCommand::Retry { id: None, .. } => retry_all(&queue),
        QueueCommand::Retry { id: Some(id), .. } => {
            done(change(&queue, &id, |m| m.next_attempt = 0), &id, "due now")
        }
        QueueCommand::Bounce { id } => done(
            change(&queue, &id, |m| {
                m.bounce_requested = true;
                m.next_attempt = 0;
            }),
            &id,
            "to be returned to its sender at the server's next rescan",
        ),
        QueueCommand::Remove { id } => {
            let result = claimed(&queue, &id)
                .and_then(|_claim| queue.remove(&id).map_err(|e| e.to_string()));
            if result.is_ok() {
                tracing::info!(entry = %id, "queue entry removed by the administrator");
            }
            done(result, &id, "removed")
        }
    }
}

/// `queue list`: every entry that reads back (corrupt ones are named on stderr).
fn list_queue(queue: &QueueDir, json: bool) -> ExitCode {
    match queue.scan_readonly() {
        Ok(scan) => {
            for (id, why) in &scan.corrupt {
                eprintln!("sealgate: {id}: corrupt ({why}); the server moves it into corrupt/");
            }
            list(&scan.entries, json)
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// `queue show ID`: the entry's metadata as JSON.
fn show(queue: &QueueDir, id: &str) -> ExitCode {
    if !valid_id(id) {
        return fail(&format!("{id:?}: not a queue id"));
    }
    match queue.read_meta(id) {
        Ok(Some(meta)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&meta).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(None) => fail(&format!("{id}: no such entry")),
        Err(e) => fail(&format!("{id}: {e}")),
    }
}

/// `queue retry --all`: every entry due now; an entry that cannot be changed (busy) is named
/// and makes the exit status 1, the others are still changed.
fn retry_all(queue: &QueueDir) -> ExitCode {
    let scan = match queue.scan_readonly() {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let mut status = ExitCode::SUCCESS;
    for meta in scan.entries {
        if let Err(e) = change(queue, &meta.id, |m| m.next_attempt = 0) {
            eprintln!("sealgate: {}: {e}", meta.id);
            status = ExitCode::FAILURE;
        }
    }
    status
}

fn same_owner(dir: &Path) -> Result<(), String> {
    use crate::store::owner::{effective_uid, user_name};
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .uid();
    let me = effective_uid();
    if owner == me {
        return Ok(());
    }
    Err(format!(
        "the queue {} belongs to {}, not to {} who runs this: files written here could not be \
         read by the server. Run it as the queue's owner, e.g. `sudo -u {} sealgate queue ...`",
        dir.display(),
        user_name(owner),
        user_name(me),
        user_name(owner)
    ))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("sealgate: {message}");
    ExitCode::FAILURE
}

fn done(result: Result<(), String>, id: &str, what: &str) -> ExitCode {
    match result {
        Ok(()) => {
            println!("{id}: {what}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("{id}: {e}")),
    }
}

fn claimed(queue: &QueueDir, id: &str) -> Result<crate::queue::store::Claim, String> {
    if !valid_id(id) {
        return Err("not a queue id".into());
    }
    match queue.claim(id) {
        Ok(Some(c)) => Ok(c),
        Ok(None) => match queue.read_meta(id) {
            Ok(Some(_)) => Err("being delivered right now; try again in a moment".into()),
            _ => Err("no such entry".into()),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// Changes an entry's metadata under its claim.
fn change(queue: &QueueDir, id: &str, f: impl FnOnce(&mut Meta)) -> Result<(), String> {
    let _claim = claimed(queue, id)?;
    let mut meta = match queue.read_meta(id) {
        Ok(Some(m)) => m,
        Ok(None) => return Err("no such entry".into()),
        Err(e) => return Err(e.to_string()),
    };
    f(&mut meta);
    queue
        .write_meta(&meta)
        .and_then(|()| queue.sync_dir())
        .map_err(|e| e.to_string())
}

fn list(entries: &[Meta], json: bool) -> ExitCode {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(entries).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let now = unix_now();
    let _ = writeln!(
        out,
        "{:<28} {:>7} {:>4} {:>7} {:>9}  {:<30} RECIPIENTS (state) / LAST REPLY",
        "ID", "AGE", "TRY", "NEXT", "SIZE", "SENDER"
    );
    for m in entries {
        let next = if m.pending().next().is_none() {
            "dsn".to_string()
        } else {
            human(m.next_attempt.saturating_sub(now))
        };
        let rcpts: Vec<String> = m
            .recipients
            .iter()
            .map(|r| {
                let state = match r.state {
                    RcptState::Pending => "waiting",
                    RcptState::Failed => "failed",
                    RcptState::Delivered => "delivered",
                };
                format!("{} ({state})", r.path.address)
            })
            .collect();
        let sender = if m.sender.address.is_empty() {
            "<>"
        } else {
            &m.sender.address
        };
        let _ = writeln!(
            out,
            "{:<28} {:>7} {:>4} {:>7} {:>9}  {:<30} {}\n{:>60}{}",
            m.id,
            human(now.saturating_sub(m.created)),
            m.attempts,
            next,
            m.size,
            sender,
            rcpts.join(", "),
            "",
            m.last_reply.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(out, "{} entries", entries.len());
    ExitCode::SUCCESS
}

fn human(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
