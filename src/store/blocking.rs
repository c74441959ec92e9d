//! The one way async code reaches the store: every call runs on tokio's blocking pool.
//!
//! SQLite calls block (disk I/O, `fsync` with `synchronous=FULL`, waiting for the write lock
//! of another process). On an async worker thread they would stall every task scheduled on
//! it — the detail requests in flight, the limiter, the shutdown signal. [`AsyncStore`] hands
//! each call to [`tokio::task::spawn_blocking`]. In debug builds the store itself checks that it
//! is not called from inside an async task by any other route, so a test that drives the sync
//! in a spawned task fails on the first direct call.

use std::cell::Cell;
use std::sync::Arc;

use super::{Result, Store, StoreError};

thread_local! {
    /// Set while a closure handed to [`AsyncStore`] runs on a blocking thread.
    static IN_BLOCKING_CALL: Cell<bool> = const { Cell::new(false) };
}

/// Panics (debug builds only) when the store is called from an async task other than through
/// [`AsyncStore`]. Commands that call the store from the runtime's root future (`block_on`)
/// are not tasks and are not affected.
#[inline]
pub(super) fn check_not_async() {
    #[cfg(debug_assertions)]
    if tokio::task::try_id().is_some() && !IN_BLOCKING_CALL.with(Cell::get) {
        panic!("a SQLite call on an async worker thread: reach the store through AsyncStore");
    }
}

/// The store as async code holds it.
#[derive(Clone)]
pub struct AsyncStore(Arc<Store>);

impl AsyncStore {
    pub fn new(store: Arc<Store>) -> Self {
        AsyncStore(store)
    }

    /// Runs `f` on the blocking pool and waits for it.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        self.spawn(f).await?
    }

    /// Starts `f` on the blocking pool; the handle yields its result (for pipelining a commit
    /// with the next page's fetch).
    pub fn spawn<T, F>(&self, f: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let store = self.0.clone();
        Pending(tokio::task::spawn_blocking(move || {
            IN_BLOCKING_CALL.with(|c| c.set(true));
            let result = f(&store);
            IN_BLOCKING_CALL.with(|c| c.set(false));
            result
        }))
    }

    /// The store itself, for code that is not async (the CLI's inspection commands).
    pub fn inner(&self) -> &Arc<Store> {
        &self.0
    }
}

/// A store call running on the blocking pool.
pub struct Pending<T>(tokio::task::JoinHandle<Result<T>>);

impl<T> Pending<T> {
    /// The call has returned (its result is ready without waiting).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl<T> std::future::Future for Pending<T> {
    type Output = Result<Result<T>>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| {
            // A panic in a store call is a bug; it is reported as an error, not propagated as
            // a panic through the sync.
            joined.map_err(|e| StoreError::Unfinished(e.to_string()))
        })
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("g.db")).unwrap());
        (dir, store)
    }

    #[tokio::test]
    async fn a_direct_call_from_an_async_task_is_caught() {
        let (_dir, store) = store();
        let direct = tokio::spawn({
            let store = store.clone();
            async move { store.record_count() }
        })
        .await;
        assert!(
            direct.is_err_and(|e| e.is_panic()),
            "a direct call in a task must panic"
        );
        let through = AsyncStore::new(store.clone()).call(|s| s.record_count()).await;
        assert_eq!(through.unwrap(), 0);
        // After the blocking call the thread is no longer marked.
        assert!(!IN_BLOCKING_CALL.with(Cell::get));
    }
}
