//! The router key held in a TPM 2.0 (feature `tpm`): an ECDSA P-256 signing key in the
//! owner hierarchy, created as a primary object, so it is re-derived identically from
//! the TPM's owner seed after every restart and its private part never leaves the TPM.
//!
//! This is the seam for `ssr-tpm`'s key store: once that crate exposes its TPM-held
//! keys, an adapter over it implements [`RouterSigner`] the same way.

use std::str::FromStr;
use std::sync::Mutex;

use p256::pkcs8::EncodePublicKey;
use sha2::{Digest as _, Sha256};
use tss_esapi::Context;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::{
    Digest, EccPoint, EccScheme, HashScheme, HashcheckTicket, PublicBuilder,
    PublicEccParametersBuilder, Signature, SignatureScheme,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::utils::PublicKey;

use crate::{Error, RouterSigner};

fn tpm_err(what: &str, e: impl core::fmt::Display) -> Error {
    Error::Signer {
        reason: format!("TPM {what}: {e}"),
    }
}

/// A P-256 signing key inside a TPM.
pub struct TpmSigner {
    ctx: Mutex<Context>,
    key: KeyHandle,
    spki: Vec<u8>,
}

impl core::fmt::Debug for TpmSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TpmSigner").finish_non_exhaustive()
    }
}

fn left_pad32(v: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let start = 32usize.checked_sub(v.len())?;
    out.get_mut(start..)?.copy_from_slice(v);
    Some(out)
}

impl TpmSigner {
    /// Opens the TPM at `tcti` (e.g. `device:/dev/tpmrm0`, `swtpm:host=…,port=…`)
    /// and (re)creates the router key.
    pub fn open(tcti: &str) -> Result<TpmSigner, Error> {
        let conf = TctiNameConf::from_str(tcti).map_err(|e| tpm_err("TCTI", e))?;
        let mut ctx = Context::new(conf).map_err(|e| tpm_err("context", e))?;
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_decrypt(false)
            .with_sign_encrypt(true)
            .with_restricted(false)
            // No password: keep dictionary-attack lockout out of it.
            .with_no_da(true)
            .build()
            .map_err(|e| tpm_err("attributes", e))?;
        let params = PublicEccParametersBuilder::new_unrestricted_signing_key(
            EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
            EccCurve::NistP256,
        )
        .build()
        .map_err(|e| tpm_err("parameters", e))?;
        let public = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_ecc_parameters(params)
            .with_ecc_unique_identifier(EccPoint::default())
            .build()
            .map_err(|e| tpm_err("template", e))?;
        let created = ctx
            .execute_with_nullauth_session(|c| {
                c.create_primary(Hierarchy::Owner, public, None, None, None, None)
            })
            .map_err(|e| tpm_err("create primary", e))?;
        let PublicKey::Ecc { x, y } =
            PublicKey::try_from(created.out_public).map_err(|e| tpm_err("public key", e))?
        else {
            return Err(tpm_err("public key", "not an EC key"));
        };
        let (Some(x), Some(y)) = (left_pad32(&x), left_pad32(&y)) else {
            return Err(tpm_err("public key", "coordinate too long"));
        };
        let mut sec1 = vec![4u8];
        sec1.extend_from_slice(&x);
        sec1.extend_from_slice(&y);
        let pk = p256::PublicKey::from_sec1_bytes(&sec1).map_err(|e| tpm_err("public key", e))?;
        let spki = pk
            .to_public_key_der()
            .map_err(|e| tpm_err("public key", e))?
            .as_bytes()
            .to_vec();
        Ok(TpmSigner {
            ctx: Mutex::new(ctx),
            key: created.key_handle,
            spki,
        })
    }
}

impl RouterSigner for TpmSigner {
    fn public_key_spki(&self) -> Result<Vec<u8>, Error> {
        Ok(self.spki.clone())
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64], Error> {
        let digest =
            Digest::try_from(Sha256::digest(message).to_vec()).map_err(|e| tpm_err("digest", e))?;
        let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(|e| tpm_err("ticket", e))?;
        let mut ctx = self
            .ctx
            .lock()
            .map_err(|_| tpm_err("context", "poisoned lock"))?;
        let key = self.key;
        let sig = ctx
            .execute_with_nullauth_session(|c| c.sign(key, digest, SignatureScheme::Null, ticket))
            .map_err(|e| tpm_err("sign", e))?;
        let Signature::EcDsa(sig) = sig else {
            return Err(tpm_err("sign", "not an ECDSA signature"));
        };
        let (Some(r), Some(s)) = (
            left_pad32(sig.signature_r().value()),
            left_pad32(sig.signature_s().value()),
        ) else {
            return Err(tpm_err("sign", "signature component too long"));
        };
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&r);
        out[32..].copy_from_slice(&s);
        Ok(out)
    }
}
