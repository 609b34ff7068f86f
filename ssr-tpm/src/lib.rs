#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod error;
mod fek;
mod fsutil;
pub mod identity;
pub mod keystore;
mod seal;

#[cfg(feature = "esapi")]
pub mod esapi;

pub use error::Error;
pub use fek::{
    FEK_LEN, Fek, FileMac, RSA2048_CIPHERTEXT_LEN, SEALED_FEK_LEN, SEALED_FEK_MAGIC,
    SEALED_FEK_V1_LEN, SEALED_FEK_VERSION, SealAlgorithm, SealedFek,
};
pub use seal::{
    DEFAULT_FEK_KEY_HANDLE, DEFAULT_FEK_MAC_KEY_HANDLE, EK_HANDLE, KeyInfo, OWNER_PERSISTENT_FIRST,
    OWNER_PERSISTENT_LAST, PcrSelection, SealConfig, Tpm, authenticate_sealed_fek,
    is_owner_persistent, seal_new_fek, unseal_fek,
};

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
