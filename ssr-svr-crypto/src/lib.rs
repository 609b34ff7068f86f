#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod error;
mod hmac384;
pub mod kex;
pub mod packet;
pub mod peer;
#[cfg(feature = "pki")]
pub mod pki;
pub mod replay;
pub mod secret;
pub mod session;
pub mod tlv;

pub use error::Error;
