//! The allocator of the gateway's programs: jemalloc instead of the C library's. A backfill
//! allocates and frees some fifty small values per project on several threads, and glibc's
//! malloc spent about a sixth of the gateway's CPU doing so (`README.md`, Performance);
//! jemalloc's thread caches cut a whole pass's CPU by about a quarter.
//!
//! A library does not choose a program's allocator: the `gateway` binary and the backfill
//! benchmark each declare it with [`use_jemalloc!`](crate::use_jemalloc), so that the
//! benchmark allocates as the daemon does, with the same settings.

pub use tikv_jemallocator::Jemalloc;

/// Declares jemalloc the program's global allocator, with the gateway's settings.
///
/// The settings go in jemalloc's `malloc_conf` symbol (prefixed as the crate builds it), read
/// once at its start. One arena: the gateway has a handful of threads, and one arena keeps the
/// memory of a long backfill flat (the default is four per core); the thread caches still
/// serve nearly every allocation without a lock. `_RJEM_MALLOC_CONF` in the environment
/// overrides them.
#[macro_export]
macro_rules! use_jemalloc {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::allocator::Jemalloc = $crate::allocator::Jemalloc;

        #[unsafe(export_name = "_rjem_malloc_conf")]
        #[allow(non_upper_case_globals)]
        pub static malloc_conf: &[u8; 10] = b"narenas:1\0";
    };
}
