#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

// Parsing, checks and chain validation (pure: no clock, no I/O).
mod cert;
mod crl;
mod error;
mod pem;
mod policy;
mod sig;
mod verify;

// Keys, CSRs, import, trust bundles, CRL manager, alarms, audit (pki-ops).
pub mod alarm;
pub mod audit;
pub mod crl_manager;
pub mod csr;
#[cfg(feature = "http")]
pub mod http;
pub mod import;
pub mod keys;
#[cfg(feature = "store")]
pub mod store;
#[cfg(feature = "tpm")]
pub mod tpm;
pub mod trust;

pub use cert::{Certificate, KeyAlgorithm};
pub use crl::{Crl, Revocation, RevokedEntry, is_revoked};
pub use error::Error;
pub use pem::{LABEL_CERTIFICATE, LABEL_CRL, PemItem, parse_pem_bundle};
pub use policy::{Issue, IssueKind, Role, check_certificate};
pub use verify::{
    ChainOptions, RequiredEku, RevocationPolicy, VerifiedChain, check_peer_identity, verify_chain,
};
