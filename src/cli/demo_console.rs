//! `gateway demo --console`: the console on the demo's database, with demo accounts made for
//! this run, until Ctrl-C.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use shuiwu_wire::SystemClock;
use tokio_util::sync::CancellationToken;

use crate::console::accounts::{Accounts, Role};
use crate::console::pages::{Console, IDLE};
use crate::console::session::Sessions;
use crate::store::AsyncStore;

/// The demo's accounts: one per role, all with `password`.
const ACCOUNTS: [(&str, Role); 3] = [
    ("demo-operator", Role::Operator),
    ("demo-auditor", Role::Auditor),
    ("demo-viewer", Role::Viewer),
];

/// Writes `console-accounts` in `dir` with a password new for this run, serves the console
/// (and `/healthz`, `/metrics`-less) on `listen` over the demo's store until `token` is
/// cancelled, and prints where and how to sign in.
pub async fn serve(
    listen: SocketAddr,
    dir: &Path,
    store: AsyncStore,
    rebuilder: crate::rebuild::Rebuilder,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    // A password of this run only: 12 random bytes in hex.
    let password = hex::encode(rand::random::<[u8; 12]>());
    let mut text = String::from("# gateway demo --console: made for one run\n");
    for (name, role) in ACCOUNTS {
        text.push_str(&Accounts::line_for(name, role, &password)?);
        text.push('\n');
    }
    let file = dir.join("console-accounts");
    std::fs::write(&file, &text)?;
    let console = Console {
        accounts: Accounts::load(&file)?,
        sessions: Sessions::new(IDLE),
        mappings: crate::mapping::MappingSet::load(None)?,
        reports: Default::default(),
    };
    let state = crate::http::HttpState {
        console: Some(Arc::new(console)),
        admin_tokens: None,
        metrics: None,
        readiness: None,
        power_webhook_secret: None,
        store,
        clock: Arc::new(SystemClock),
        rebuilder,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("--console {listen}: {e}"))?;
    let at = listener.local_addr()?;
    outln!();
    outln!("console: http://{at}/console (Ctrl-C stops it)");
    outln!(
        "  sign in as demo-operator (replay, dismiss, stage events), demo-auditor (reveal, export) or demo-viewer"
    );
    outln!("  password for this run: {password}");
    outln!("  accounts: {} (Argon2id hashes)", file.display());
    crate::http::serve(listener, state, token.clone()).await?;
    outln!("console stopped");
    Ok(())
}
