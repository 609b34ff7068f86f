//! Shared pieces of the runnable programs in `examples/`: each capability's walk-through
//! is a function here, so `device-demo` and the single-capability examples run the same
//! code.

pub mod svr;
