//! The router key held in a TPM 2.0 (feature `tpm`): ssr-tpm's key store entry
//! [`ROUTER_KEY_NAME`] under the TPM's master key, the same key `ssr cert keygen --tpm`
//! creates and `ssr cert csr` signs with. ssr-onboard keeps no TPM code: the key is
//! created, wrapped, loaded and used by ssr-tpm ([`TpmKey`]), and it signs the
//! onboarding proof through ssr-pki's `RouterKey` (every `RouterKey` is a
//! [`crate::RouterSigner`]).

use std::path::Path;

pub use ssr_pki::tpm::ROUTER_KEY_NAME;
pub use ssr_tpm::esapi::TpmKey;

use crate::Error;

/// The router key in the TPM: ssr-tpm's [`TpmKey`].
pub type TpmSigner = TpmKey;

/// Opens the router key of the key store in `key_store` on the TPM at `tcti`
/// (`device:/dev/tpmrm0`, `swtpm:host=…,port=…`), creating it (and the TPM's master
/// key) when the store has none yet, so that onboarding before `ssr cert keygen --tpm`
/// makes the key the CSR will carry.
pub fn open_router_key(tcti: &str, key_store: &Path) -> Result<TpmSigner, Error> {
    TpmKey::open_or_create(tcti, key_store, ROUTER_KEY_NAME).map_err(|e| Error::Signer {
        reason: format!("TPM router key in {}: {e}", key_store.display()),
    })
}
