//! The router key in the TPM (feature `tpm`): ssr-tpm's [`TpmKey`], the key store
//! entry [`ROUTER_KEY_NAME`], is a [`RouterKey`]. Key creation, wrapping and signing are
//! ssr-tpm's; this module only adapts the error type.

pub use ssr_tpm::esapi::TpmKey;
pub use ssr_tpm::keystore::ROUTER_KEY_NAME;

use crate::Error;
use crate::keys::RouterKey;

fn tpm_err(e: ssr_tpm::Error) -> Error {
    Error::InvalidKey {
        reason: format!("TPM router key: {e}"),
    }
}

impl RouterKey for TpmKey {
    fn public_key_der(&self) -> Result<Vec<u8>, Error> {
        Ok(self.spki_der().to_vec())
    }

    fn sign_p256(&self, message: &[u8]) -> Result<[u8; 64], Error> {
        self.sign(message).map_err(tpm_err)
    }

    fn holder(&self) -> &'static str {
        "tpm"
    }
}
