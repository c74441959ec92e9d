//! Consistency proofs: that the log as the gateway signs it now still contains, unchanged,
//! the log an auditor saw when they kept an older checkpoint (RFC 9162 §2.1.4). The proof file
//! carries the newest signed checkpoint; the auditor brings the old one and the public key.
//!
//! ```text
//! shuiwu-gateway consistency proof
//! old 1200
//! new 1843
//! <base64 hash>
//! …
//!
//! <the newest signed checkpoint>
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::tlog::checkpoint::{Checkpoint, Verifier};
use crate::tlog::tree::{Hash, verify_consistency};

const HEADER: &str = "shuiwu-gateway consistency proof";
/// The first line of a C2SP tlog-proof.
const TLOG_PROOF: &str = "c2sp.org/tlog-proof@v1";

/// The proof's text.
pub fn make(old_size: u64, new_size: u64, proof: &[Hash], new_note: &str) -> String {
    write(
        format!("{HEADER}\nold {old_size}\nnew {new_size}\n"),
        proof,
        new_note,
    )
}

/// The form both proof files share: their own lines, a base64 hash per line, a blank line and
/// the signed checkpoint.
fn write(mut out: String, proof: &[Hash], note: &str) -> String {
    for h in proof {
        out.push_str(&B64.encode(h));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(note);
    out
}

/// Reads that form back: the lines after `first` (which must open the file), and the
/// checkpoint's note. `what` names the kind of file in errors.
fn read<'t>(text: &'t str, first: &str, what: &str) -> Result<(std::str::Lines<'t>, &'t str), String> {
    let (head, note) = text
        .split_once("\n\n")
        .ok_or(format!("not a {what}: no blank line before the checkpoint"))?;
    let mut lines = head.lines();
    if lines.next() != Some(first) {
        return Err(format!("not a {what}: the first line is not {first:?}"));
    }
    Ok((lines, note))
}

/// The hash lines that end a proof's own lines.
fn hashes(lines: std::str::Lines<'_>, what: &str) -> Result<Vec<Hash>, String> {
    lines
        .map(|l| B64.decode(l).ok().and_then(|b| Hash::try_from(b.as_slice()).ok()))
        .collect::<Option<_>>()
        .ok_or(format!("not a {what}: a hash line is not a base64 32-byte hash"))
}

/// Checks a proof against the old checkpoint the auditor kept, with the public key: both
/// checkpoints signed by it, and the newer tree an extension of the older. The two
/// checkpoints, or why not.
pub fn check(text: &str, old_note: &str, key: &Verifier) -> Result<(Checkpoint, Checkpoint), String> {
    let (mut lines, new_note) = read(text, HEADER, "consistency proof")?;
    let size = |line: Option<&str>, name: &str| -> Result<u64, String> {
        line.and_then(|l| l.strip_prefix(name))
            .and_then(|n| n.trim().parse().ok())
            .ok_or(format!("not a consistency proof: no {name}line"))
    };
    let old_size = size(lines.next(), "old ")?;
    let new_size = size(lines.next(), "new ")?;
    let proof = hashes(lines, "consistency proof")?;
    let old = key
        .open(old_note)
        .map_err(|e| format!("the old checkpoint: {e}"))?;
    let new = key
        .open(new_note)
        .map_err(|e| format!("the new checkpoint: {e}"))?;
    if old.size != old_size || new.size != new_size {
        return Err(format!(
            "the proof is from size {old_size} to {new_size}, the checkpoints are of sizes {} and {}",
            old.size, new.size
        ));
    }
    if old.hash != new.hash || old.origin != new.origin {
        return Err("the checkpoints are of different logs".into());
    }
    if !verify_consistency(new.hash, old.size, &old.root, new.size, &new.root, &proof) {
        return Err(format!(
            "the log of {} entries is not an extension of the log of {} entries you kept: entries before {} were changed, removed or reordered",
            new.size, old.size, old.size
        ));
    }
    Ok((old, new))
}

/// One entry's proof in the C2SP `tlog-proof` format: the entry's text as the `extra` data,
/// its index, the inclusion proof's hashes and the checkpoint, so that any tool that reads
/// the format can check it.
pub fn tlog_proof(index: u64, entry: &str, proof: &[Hash], note: &str) -> String {
    let head = format!("{TLOG_PROOF}\nextra {}\nindex {index}\n", B64.encode(entry));
    write(head, proof, note)
}

/// Checks a `tlog-proof` with the public key: the checkpoint's signature, then that the entry
/// (the `extra` data) is leaf `index` of its tree. The entry's text and index, or why not.
pub fn check_tlog_proof(text: &str, key: &Verifier) -> Result<(String, u64), String> {
    let (mut lines, note) = read(text, TLOG_PROOF, "tlog-proof")?;
    let entry = lines
        .next()
        .and_then(|l| l.strip_prefix("extra "))
        .and_then(|e| B64.decode(e).ok())
        .and_then(|e| String::from_utf8(e).ok())
        .ok_or("not a gateway entry's proof: no extra line with the entry's text")?;
    let index: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("index "))
        .and_then(|n| n.parse().ok())
        .ok_or("not a tlog-proof: no index line")?;
    let proof = hashes(lines, "tlog-proof")?;
    let c = key.open(note).map_err(|e| format!("the checkpoint: {e}"))?;
    if !crate::tlog::tree::verify_inclusion(c.hash, entry.as_bytes(), index, c.size, &c.root, &proof) {
        return Err(format!(
            "entry {index} is not in the log the checkpoint signed (the entry or the proof was altered)"
        ));
    }
    Ok((entry, index))
}
