//! Configuration Integrity, the service side: onboarding, unlock at every boot,
//! integrity events (requirements 1.1, 1.4, 1.5, 1.7, 1.8).
//!
//! - [`config`]: the TOML configuration.
//! - [`plan`]: the pure decisions of a crash-safe onboarding.
//! - [`service`]: `start` / `lock` / `status`, wired to ssr-tpm, ssr-fscrypt, the
//!   journal and nftables.
//! - [`journal`]: native-protocol journald records (and stderr).
//! - [`nft`]: the drop-all-but-loopback ruleset loaded on an integrity event.
//! - [`record`]: the onboarding record's strict file format.
//! - [`downgrade`]: the installer's downgrade guard.
//! - [`hardening`]: non-dumpable, memory locked (keys stay out of cores and swap).

pub mod config;
pub mod downgrade;
mod error;
mod fsutil;
pub mod hardening;
pub mod journal;
pub mod nft;
pub mod plan;
pub mod record;
pub mod service;

pub use config::Config;
pub use error::{Error, Result};
pub use service::{
    Handler, StartError, Started, Status, StepHook, connect_esapi, integrity_event,
    state_shows_onboarded,
};
