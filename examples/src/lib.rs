//! Shared pieces of the runnable programs in `examples/`: each capability's walk-through
//! is a function here, so `device-demo` and the single-capability examples run the same
//! code.

pub mod onboard;
pub mod pki;
pub mod svr;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
