#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod error;
mod machine;
pub mod trust;
pub mod wire;

#[cfg(feature = "http")]
pub mod http;

pub use config::{
    AccessMode, Config, HaMode, HealthSettings, RetrySettings, Settings, SourceConfig, SourceKind,
    TlsFiles, TrustFiles, allowed, nominal_retry_delay, retry_delay,
};
pub use error::{AttemptFailure, Error};
pub use machine::{
    Action, ChunkVerdict, Download, End, Event, Failure, Fetch, Progress, RequestId, Resource,
    Resume, SourceId, Status,
};
pub use trust::{ManifestTrust, ReleaseKey, sign_manifest, verify_manifest};
pub use wire::{ChunkHash, Manifest};
