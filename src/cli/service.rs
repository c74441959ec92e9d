//! The service manager's protocol (`sd_notify(3)`): `READY=1` once the database is open and
//! the server listens, `STATUS=` lines an operator sees in `systemctl status`, `STOPPING=1` on
//! shutdown, and `WATCHDOG=1` while the sync loop is alive.
//!
//! The watchdog is fed from the loop's heartbeats, not from a timer alone: the loop beats at the
//! start and end of every pass, at every unit it commits, and while it waits between passes; a
//! task sends `WATCHDOG=1` every half interval only while the last beat is younger than the
//! interval. A loop wedged anywhere stops beating, the notifications stop, and systemd restarts
//! the service (`WatchdogSec=` in the unit). Without `NOTIFY_SOCKET` (not run by systemd) every
//! call is a no-op.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// The service manager, as far as the daemon talks to it.
#[derive(Clone)]
pub struct Service {
    /// `WATCHDOG_USEC`, when systemd asked for the watchdog.
    watchdog: Option<Duration>,
    started: Instant,
    /// Milliseconds from `started` to the loop's last heartbeat.
    last_beat: Arc<AtomicU64>,
}

impl Service {
    pub fn from_env() -> Service {
        let watchdog = sd_notify::watchdog_enabled();
        Service {
            watchdog,
            started: Instant::now(),
            last_beat: Arc::new(AtomicU64::new(0)),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        // The manager not listening is not the daemon's failure: it is said, and work goes on.
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!("notifying the service manager failed: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// The sync loop is alive.
    pub fn beat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_beat.store(ms, Ordering::Relaxed);
    }

    /// Sleeps `wait` (or until `token` fires), beating at least every half watchdog interval.
    pub async fn sleep(&self, wait: Duration, token: &CancellationToken) {
        let step = self
            .watchdog
            .map_or(wait, |w| w / 2)
            .max(Duration::from_millis(10));
        let until = Instant::now() + wait;
        loop {
            self.beat();
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(left.min(step)) => {}
            }
        }
    }

    /// Feeds the watchdog while the loop beats, until `token` fires.
    pub fn spawn_watchdog(&self, token: CancellationToken) {
        let Some(interval) = self.watchdog else {
            return;
        };
        tracing::info!(
            interval_ms = interval.as_millis() as u64,
            "feeding the service manager's watchdog"
        );
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                let since_beat = service
                    .started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(service.last_beat.load(Ordering::Relaxed)));
                if since_beat < interval {
                    service.send(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!(
                        silent_secs = since_beat.as_secs(),
                        "the sync loop has not shown progress within the watchdog interval: letting the service manager restart the gateway"
                    );
                }
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(interval / 2) => {}
                }
            }
        });
    }
}
