#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "kernel"), forbid(unsafe_code))]

mod contents;
mod error;
mod fname;
mod inode;
mod key;
mod policy;
mod siphash;

#[cfg(feature = "kernel")]
pub mod kernel;

pub use contents::{ContentsCipher, index_iv};
pub use error::{Error, Result};
pub use fname::{
    FilenameCipher, MAX_NAME_LEN, MIN_CIPHERTEXT_NAME_LEN, NOKEY_NAME_BYTES, NOKEY_NAME_MAX,
    NoKeyName, base64url_decode, base64url_encode, encrypted_name_len,
};
pub use inode::{InodeCipher, InodeInfo};
pub use key::{
    HkdfContext, KEY_IDENTIFIER_SIZE, KeyIdentifier, MAX_MASTER_KEY_SIZE, MIN_MASTER_KEY_SIZE,
    MasterKey, ModeKey, NONCE_SIZE, SipKey,
};
pub use policy::{
    CONTEXT_V2_SIZE, ContextV2, EncryptionMode, IvMode, POLICY_V2_SIZE, Padding, PolicyV2,
    VERSION_V2,
};
