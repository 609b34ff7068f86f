#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod audit;
mod b64;
pub mod conductor;
pub mod config;
mod error;
pub mod msg;
pub mod psk;
pub mod record;
pub mod router;
pub mod signer;
pub mod ssh;
pub mod token;
pub mod transcript;

#[cfg(feature = "https")]
pub mod https;
#[cfg(feature = "tpm")]
pub mod tpm;
#[cfg(feature = "https")]
pub mod used_tokens;

pub use error::{Error, ErrorKind};
pub use psk::Psk;
pub use signer::{RouterSigner, SoftwareSigner};
pub use token::Token;
