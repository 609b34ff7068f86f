#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod error;
mod hmac384;
pub mod kex;
pub mod packet;
pub mod peer;
pub mod replay;
pub mod secret;
pub mod tlv;

pub use error::Error;
