//! `gateway audit`: the signing key's public half, the newest signed checkpoint, the entries
//! of the operators' chain, and the verification of the log and of every table against it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use super::{audit_config_from, db_path, open_store, sync_start_from, table};
use crate::tlog::checkpoint::Verifier;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the log against its signed checkpoints and every row of every table against the
    /// log; exit 1 naming each entry, table and row that does not hold.
    Verify {
        /// The public key (`gateway audit key` prints it), or a file holding it. Default: the
        /// gateway's own key.
        #[arg(long)]
        key: Option<String>,
        /// A signed checkpoint kept outside the database (`gateway audit checkpoint`): the log
        /// must still contain what it signed, so a truncated tail is found even when the
        /// newest checkpoints were deleted with it.
        #[arg(long)]
        trusted: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The public key auditors verify checkpoints and evidence packages with (made if the
    /// gateway has none yet).
    Key,
    /// The newest signed checkpoint, to keep outside the database.
    Checkpoint,
    /// Write one record's evidence package: every version, its lineage, the raw documents
    /// and the mapping and policy files it was made from, the operators' actions, checks and
    /// calls, each with its proof against a signed checkpoint. Signed with the gateway's key.
    Package {
        /// The record (`PE-…`).
        id: String,
        #[arg(long)]
        out: PathBuf,
        /// Include the personal data (raw documents, record contents, lineage, call bodies):
        /// audited, with --by and --reason.
        #[arg(long, requires_all = ["by", "reason"])]
        reveal: bool,
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Check an evidence package with the public key alone: no database, no network.
    CheckPackage {
        file: PathBuf,
        /// The public key (`gateway audit key`), or a file holding it.
        #[arg(long)]
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Prove from the coverage ledger that the listing windows read completely tile the time
    /// from the configured start (or --from) to the cursor (or --to), and name every gap or
    /// overlap: was any hour of March never read? Exit 1 when one is found.
    Coverage {
        /// `approval` (the project listing) or `power` (the joint applications' listing);
        /// default both.
        #[arg(long, value_parser = ["approval", "power"])]
        source: Option<String>,
        /// Beijing time, `yyyy-MM-dd` or `yyyy-MM-dd HH:mm:ss`.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The proof that the log under the newest checkpoint still contains, unchanged, the log
    /// of a checkpoint kept earlier (RFC 9162 consistency proof), with the newest checkpoint.
    Consistency {
        /// The checkpoint kept earlier (`gateway audit checkpoint`).
        #[arg(long)]
        from: PathBuf,
        /// Where to write the proof (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a consistency proof offline, against the checkpoint you kept and the public key.
    CheckConsistency {
        file: PathBuf,
        /// The checkpoint you kept.
        #[arg(long)]
        trusted: PathBuf,
        /// The public key (`gateway audit key`), or a file holding it.
        #[arg(long)]
        key: String,
    },
    /// One entry of the log with its inclusion proof, in the C2SP tlog-proof format (the
    /// entry's text as its extra data).
    Proof {
        /// The entry's index (`audit verify` and packages name entries by it).
        index: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a tlog-proof offline with the public key.
    CheckProof {
        file: PathBuf,
        #[arg(long)]
        key: String,
    },
    /// The newest entries of the operators' chain (operator actions, passes, backups).
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

/// A public key given as its text or as a file holding it.
fn verifier_from(arg: &str) -> anyhow::Result<Verifier> {
    let text = if Path::new(arg).is_file() {
        std::fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?
    } else {
        arg.to_string()
    };
    Ok(Verifier::parse(text.trim())?)
}

pub fn run(config: &Path, db: Option<&Path>, command: AuditCommand) -> anyhow::Result<ExitCode> {
    let audit = audit_config_from(config).unwrap_or_default();
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    match command {
        AuditCommand::Proof { index, out } => {
            let store = open_store(config, db)?;
            let (entry, note, proof) = store.inclusion_proof(index)?;
            let text = crate::audit::consistency::tlog_proof(index, &entry, &proof, &note);
            match out {
                Some(p) => std::fs::write(&p, &text).with_context(|| format!("writing {}", p.display()))?,
                None => crate::cli::emit(&text),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::CheckProof { file, key } => {
            let verifier = verifier_from(&key)?;
            match crate::audit::consistency::check_tlog_proof(&read(&file)?, &verifier) {
                Ok((entry, index)) => {
                    outln!(
                        "entry {index} is in the log signed by {}: {entry}",
                        verifier.to_text()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(why) => {
                    outln!("NOT PROVED: {why}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCommand::Consistency { from, out } => {
            let store = open_store(config, db)?;
            let old_note = read(&from)?;
            // The old checkpoint's size, read from its text; its signature is the auditor's
            // to check, with the proof.
            let old_size: u64 = old_note
                .lines()
                .nth(1)
                .and_then(|l| l.parse().ok())
                .with_context(|| format!("{} is not a checkpoint", from.display()))?;
            let (new_size, new_note, proof) = store.consistency_proof(old_size)?;
            let text = crate::audit::consistency::make(old_size, new_size, &proof, &new_note);
            match out {
                Some(p) => std::fs::write(&p, &text).with_context(|| format!("writing {}", p.display()))?,
                None => crate::cli::emit(&text),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::CheckConsistency { file, trusted, key } => {
            let verifier = verifier_from(&key)?;
            match crate::audit::consistency::check(&read(&file)?, &read(&trusted)?, &verifier) {
                Ok((old, new)) => {
                    outln!(
                        "consistent: the log of {} entries signed now contains, unchanged, the {} entries of the checkpoint you kept ({})",
                        new.size,
                        old.size,
                        verifier.to_text()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(why) => {
                    outln!("NOT CONSISTENT: {why}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCommand::Coverage {
            source,
            from,
            to,
            json,
        } => {
            let store = open_store(config, db)?;
            let at =
                |t: Option<String>, what: &str| -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
                    t.map(|t| {
                        let full = if t.trim().len() == 10 {
                            format!("{} 00:00:00", t.trim())
                        } else {
                            t.clone()
                        };
                        shuiwu_wire::parse_beijing(&full).with_context(|| {
                            format!("--{what} {t:?} is not yyyy-MM-dd or yyyy-MM-dd HH:mm:ss (Beijing time)")
                        })
                    })
                    .transpose()
                };
            let (from, to) = (at(from, "from")?, at(to, "to")?);
            let start = sync_start_from(config);
            let sources: Vec<&str> = match source.as_deref() {
                Some(s) => vec![s],
                None => vec!["approval", "power"],
            };
            let mut all = Vec::new();
            for s in sources {
                // Without a configuration, the ledger's own first window says where reading began.
                let start = match start {
                    Some(t) => t,
                    None => match store
                        .coverage(s, chrono::DateTime::<chrono::Utc>::MIN_UTC, None, None)?
                        .windows
                        .first()
                    {
                        Some(w) => w.start.unwrap_or(w.end),
                        None => continue,
                    },
                };
                all.push(store.coverage(s, start, from, to)?);
            }
            let complete = all.iter().all(|c| c.complete());
            if json {
                outln!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                let b = |t: &chrono::DateTime<chrono::Utc>| shuiwu_wire::format_beijing(*t);
                for c in &all {
                    if c.complete() {
                        outln!(
                            "{}: [{}, {}) Beijing time read completely, once: {} windows, contiguous{}",
                            c.source,
                            b(&c.from),
                            b(&c.to),
                            c.windows.len(),
                            c.watermark
                                .map(|w| format!(" (the cursor is at {})", b(&w)))
                                .unwrap_or_default()
                        );
                    } else {
                        outln!(
                            "{}: [{}, {}) Beijing time NOT covered exactly once:",
                            c.source,
                            b(&c.from),
                            b(&c.to)
                        );
                        for f in &c.flaws {
                            outln!("  {f}");
                        }
                    }
                }
                if all.is_empty() {
                    outln!("no listing has been read yet");
                }
            }
            Ok(if complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCommand::CheckPackage { file, key, json } => {
            let verifier = verifier_from(&key)?;
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let report = crate::audit::package::check(&text, &verifier);
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                if report.intact() {
                    outln!(
                        "evidence package of {} intact: {} entries in the log signed at size {} by {}, {} values with their hashes, {} fields of {} record versions and {} materials checks mapped again from their raw bytes",
                        report.record,
                        report.entries,
                        report.checkpoint_size,
                        verifier.to_text(),
                        report.values,
                        report.fields,
                        report.versions,
                        report.materials_checks
                    );
                } else {
                    outln!("EVIDENCE PACKAGE BROKEN: {} problems", report.problems.len());
                    for p in &report.problems {
                        outln!("  {p}");
                    }
                }
                for u in &report.unchecked {
                    outln!("not checked: {u}");
                }
            }
            Ok(if report.intact() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCommand::Package {
            id,
            out,
            reveal,
            by,
            reason,
        } => {
            let store = open_store(config, db)?;
            let signer = crate::audit::key::load(&audit, store.path(), crate::audit::key::Missing::Skip)?
                .context("a package is signed with the gateway's audit key, which cannot be read here")?;
            let now = chrono::Utc::now();
            let detail = serde_json::json!({
                "out": out.display().to_string(), "reveal": reveal, "reason": reason,
            });
            let actor = by
                .clone()
                .unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
            let action = if reveal {
                "evidence_package_revealed"
            } else {
                "evidence_package"
            };
            // Audited before it is made: the entry is in the package it announces.
            store.audit_event(&actor, action, &id, &detail.to_string(), now)?;
            let evidence = store.evidence(&id)?;
            let text = crate::audit::package::make(&evidence, &signer, reveal, &crate::store::ts_text(now));
            let mut f = crate::store::private_file_options(
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true),
            )
            .open(&out)
            .with_context(|| format!("writing {}", out.display()))?;
            std::io::Write::write_all(&mut f, text.as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", out.display()))?;
            outln!(
                "evidence package of {id} written to {}: {} entries proved against checkpoint {}, {} values{}",
                out.display(),
                evidence.entries.len(),
                evidence.size,
                evidence.values.len(),
                if reveal {
                    ", personal data included (audited)"
                } else {
                    "; personal data withheld"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Key => {
            let path = db_path(config, db);
            let signer = crate::audit::key::load(&audit, &path, crate::audit::key::Missing::Create)?
                .context("no audit key")?;
            outln!("{}", signer.verifier().to_text());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint => {
            let store = open_store(config, db)?;
            match store.audit_checkpoint()? {
                Some((_, note)) => {
                    crate::cli::emit(&note);
                    Ok(ExitCode::SUCCESS)
                }
                None => anyhow::bail!("no checkpoint has been signed yet"),
            }
        }
        AuditCommand::Verify { key, trusted, json } => {
            let store = open_store(config, db)?;
            let verifier = match key {
                Some(k) => verifier_from(&k)?,
                None => crate::audit::key::load(&audit, store.path(), crate::audit::key::Missing::Skip)?
                    .map(|s| s.verifier())
                    .context("the gateway's audit key cannot be read here: pass the public key with --key")?,
            };
            let trusted = trusted
                .map(|p| std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display())))
                .transpose()?;
            let log = store.audit_verify(&verifier, trusted.as_deref())?;
            let chain = crate::store::audit::verify(&store.audit_entries()?, store.audit_head()?.as_ref());
            let intact = log.intact() && chain.broken_at.is_none();
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "intact": intact, "log": log, "operators_chain": chain,
                    }))?
                );
            } else if intact {
                outln!(
                    "audit log intact: {} entries ({}), the newest {} under a checkpoint signed by {}; {} rows checked against their entries; operators' chain intact ({} entries)",
                    log.entries,
                    log.tree_hash,
                    log.verified_size,
                    verifier.to_text(),
                    log.rows,
                    chain.entries
                );
            } else {
                outln!(
                    "AUDIT LOG BROKEN: {} problems",
                    log.findings.len() + usize::from(chain.broken_at.is_some())
                );
                for f in log.findings.iter().take(100) {
                    outln!("  {f}");
                }
                if log.findings.len() > 100 {
                    outln!(
                        "  … and {} more (--json lists every one)",
                        log.findings.len() - 100
                    );
                }
                if let Some((seq, why)) = &chain.broken_at {
                    outln!("  operators' chain, entry {seq}: {why}");
                }
            }
            Ok(if intact {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCommand::List { limit, json } => {
            let store = open_store(config, db)?;
            let entries = store.audit_entries()?;
            let newest: Vec<_> = entries.iter().rev().take(limit).collect();
            if json {
                outln!("{}", serde_json::to_string_pretty(&newest)?);
            } else {
                table::print(
                    &["seq", "at", "actor", "action", "subject", "hash"],
                    &newest
                        .iter()
                        .map(|e| {
                            vec![
                                e.seq.to_string(),
                                shuiwu_wire::human_from_stored(&e.at),
                                e.actor.clone(),
                                e.action.clone(),
                                e.subject.clone(),
                                e.hash.chars().take(12).collect(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
