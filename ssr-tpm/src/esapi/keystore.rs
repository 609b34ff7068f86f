//! [`KeyStoreTpm`] over ESAPI: P-256 signing keys created under the master key, and
//! [`TpmKey`], one key store entry held open on a TPM connection for repeated signing.

use std::path::Path;
use std::sync::Mutex;

use tss_esapi::constants::Tss2ResponseCodeKind;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, EccScheme, HashScheme, HashcheckTicket, Private, Public, PublicEccParametersBuilder,
    Signature, SignatureScheme,
};
use tss_esapi::traits::{Marshall as _, UnMarshall as _};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

use super::{EsapiTpm, ecc_public, kind, tpm_bound_key_attributes, tpm_err};
use crate::identity::DEFAULT_MASTER_KEY_HANDLE;
use crate::keystore::{KeyEntry, KeyStore, KeyStoreTpm, WrappedKey};
use crate::{Error, seal::check_owner_handle};

/// DER prefix of a P-256 SubjectPublicKeyInfo, before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Two P-256 integers (TPM big-endian, leading zeros possibly stripped) as one 64-byte
/// `a || b`, each left-padded to 32 bytes; `None` when one is longer than 32 bytes.
fn p256_pair(a: &[u8], b: &[u8]) -> Option<[u8; 64]> {
    let mut out = [0u8; 64];
    let (left, right) = out.split_at_mut(32);
    left.get_mut(32usize.checked_sub(a.len())?..)?
        .copy_from_slice(a);
    right
        .get_mut(32usize.checked_sub(b.len())?..)?
        .copy_from_slice(b);
    Some(out)
}

/// The uncompressed SEC1 point of a P-256 TPM public.
pub(crate) fn p256_point(public: &Public) -> Result<[u8; 65], Error> {
    let Public::Ecc { unique, .. } = public else {
        return Err(Error::UnexpectedAnswer {
            op: "Create",
            reason: "not an ECC key",
        });
    };
    let Some(xy) = p256_pair(unique.x().value(), unique.y().value()) else {
        return Err(Error::UnexpectedAnswer {
            op: "Create",
            reason: "P-256 coordinate longer than 32 bytes",
        });
    };
    let mut point = [4u8; 65];
    point[1..].copy_from_slice(&xy);
    Ok(point)
}

pub(crate) fn p256_spki(public: &Public) -> Result<Vec<u8>, Error> {
    let mut spki = P256_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(&p256_point(public)?);
    Ok(spki)
}

/// An unrestricted ECDSA P-256 / SHA-256 signing key: fixedTPM, fixedParent, noDA.
pub(crate) fn p256_signing_template() -> Result<Public, Error> {
    let attrs = tpm_bound_key_attributes()
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .with_decrypt(false)
        .with_restricted(false)
        .build()
        .map_err(|e| tpm_err("key template", e))?;
    let params = PublicEccParametersBuilder::new_unrestricted_signing_key(
        EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
        EccCurve::NistP256,
    )
    .build()
    .map_err(|e| tpm_err("key template", e))?;
    ecc_public(attrs, params, "key template")
}

impl EsapiTpm {
    /// TPM2_Sign of a SHA-256 digest by a loaded P-256 key: `r || s`.
    pub(crate) fn sign_digest(
        &mut self,
        key: KeyHandle,
        digest: &[u8; 32],
    ) -> Result<[u8; 64], Error> {
        let digest = Digest::try_from(digest.to_vec()).map_err(|e| tpm_err("digest", e))?;
        let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(|e| tpm_err("ticket", e))?;
        self.count(1);
        let sig = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.sign(key, digest, SignatureScheme::Null, ticket)
            })
            .map_err(|e| tpm_err("Sign", e))?;
        let Signature::EcDsa(sig) = sig else {
            return Err(Error::UnexpectedAnswer {
                op: "Sign",
                reason: "not an ECDSA signature",
            });
        };
        p256_pair(sig.signature_r().value(), sig.signature_s().value()).ok_or(
            Error::UnexpectedAnswer {
                op: "Sign",
                reason: "signature component longer than 32 bytes",
            },
        )
    }

    fn master(&mut self, handle: u32) -> Result<KeyHandle, Error> {
        check_owner_handle("master key", handle)?;
        self.persistent(handle)?
            .map(KeyHandle::from)
            .ok_or(Error::KeyMissing { handle })
    }
}

/// The bodies of the [`KeyStoreTpm`] methods; the trait impl maps a lost TPM to
/// [`Error::NoTpm`] with this connection's TCTI.
impl EsapiTpm {
    fn master_key_name_impl(&mut self, handle: u32) -> Result<Option<[u8; 32]>, Error> {
        self.fresh_name_digest("master key", handle)
    }

    fn create_wrapped_key_impl(&mut self, master: u32) -> Result<WrappedKey, Error> {
        let parent = self.master(master)?;
        let template = p256_signing_template()?;
        self.count(1);
        let created = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.create(parent, template, None, None, None, None)
            })
            .map_err(|e| tpm_err("Create", e))?;
        let spki_der = p256_spki(&created.out_public)?;
        let tpm_public = created
            .out_public
            .marshall()
            .map_err(|e| tpm_err("marshal public", e))?;
        Ok(WrappedKey {
            tpm_public,
            tpm_private: created.out_private.value().to_vec(),
            spki_der,
        })
    }

    fn sign_with_wrapped_key_impl(
        &mut self,
        master: u32,
        key: &WrappedKey,
        digest: &[u8; 32],
    ) -> Result<[u8; 64], Error> {
        let parent = self.master(master)?;
        let corrupt = |reason| Error::Corrupt {
            what: "key store entry",
            reason,
        };
        let public = Public::unmarshall(&key.tpm_public).map_err(|_| corrupt("TPM public blob"))?;
        if p256_spki(&public)? != key.spki_der {
            return Err(corrupt("public key does not match the TPM public blob"));
        }
        let private =
            Private::try_from(key.tpm_private.clone()).map_err(|_| corrupt("TPM private blob"))?;
        self.count(1);
        let loaded = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.load(parent, private, public)
            })
            .map_err(|e| match kind(&e) {
                // The private blob's HMAC is keyed by the parent's seed: another TPM
                // (or another master key) cannot verify it.
                Some(Tss2ResponseCodeKind::Integrity | Tss2ResponseCodeKind::Binding) => {
                    Error::WrongTpm {
                        handle: master,
                        reason: "this TPM's master key cannot unwrap the key",
                    }
                }
                Some(
                    Tss2ResponseCodeKind::Size
                    | Tss2ResponseCodeKind::Value
                    | Tss2ResponseCodeKind::Key
                    | Tss2ResponseCodeKind::Attributes,
                ) => corrupt("the TPM refused the key blob"),
                _ => tpm_err("Load", e),
            })?;
        let result = self.sign_digest(loaded, digest);
        self.count(1);
        let _ = self.ctx.flush_context(ObjectHandle::from(loaded));
        result
    }
}

impl KeyStoreTpm for EsapiTpm {
    fn master_key_name(&mut self, handle: u32) -> Result<Option<[u8; 32]>, Error> {
        let r = self.master_key_name_impl(handle);
        self.lost_tpm(r)
    }

    fn create_wrapped_key(&mut self, master: u32) -> Result<WrappedKey, Error> {
        let r = self.create_wrapped_key_impl(master);
        self.lost_tpm(r)
    }

    fn sign_with_wrapped_key(
        &mut self,
        master: u32,
        key: &WrappedKey,
        digest: &[u8; 32],
    ) -> Result<[u8; 64], Error> {
        let r = self.sign_with_wrapped_key_impl(master, key, digest);
        self.lost_tpm(r)
    }
}

/// One key of the key store, held with its TPM connection: the router key of SPEC 3.4
/// (name [`crate::keystore::ROUTER_KEY_NAME`]) behind the CSR, the onboarding proof of
/// possession and SVR peer authentication. Every [`TpmKey::sign`] is TPM2_Load +
/// TPM2_Sign + FlushContext under the master key; the private key never leaves the TPM
/// except wrapped by the master key's seed.
///
/// `Debug` names the entry, never the blobs.
pub struct TpmKey {
    tpm: Mutex<EsapiTpm>,
    entry: KeyEntry,
}

impl core::fmt::Debug for TpmKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TpmKey")
            .field("name", &self.entry.name())
            .field(
                "master_handle",
                &format_args!("{:#010x}", self.entry.master_handle()),
            )
            .finish_non_exhaustive()
    }
}

impl TpmKey {
    /// Opens the existing key `name` of the key store in `dir` (master key at the
    /// default handle 0x81000101) on the TPM at `tcti`, and checks that this TPM's
    /// master key is the one that wrapped it ([`Error::WrongTpm`] otherwise,
    /// [`Error::KeyNotFound`] when there is no such entry).
    pub fn open(tcti: &str, dir: &Path, name: &str) -> Result<TpmKey, Error> {
        let store = KeyStore::new(dir, DEFAULT_MASTER_KEY_HANDLE)?;
        let entry = store.load(name)?;
        let mut tpm = EsapiTpm::connect(tcti)?;
        // The Name check of `KeyEntry::sign`, once up front, so a foreign entry fails
        // here and not at the first signature.
        entry.sign(&mut tpm, b"ssr-tpm key check")?;
        Ok(TpmKey {
            tpm: Mutex::new(tpm),
            entry,
        })
    }

    /// Creates the key `name` in the key store in `dir`: the master key is created at
    /// the default handle first if the TPM has none, then a fresh P-256 key is made
    /// under it. `replace`: an existing entry of that name is deleted first (its
    /// private key is gone for good); otherwise [`Error::KeyExists`].
    pub fn create(tcti: &str, dir: &Path, name: &str, replace: bool) -> Result<TpmKey, Error> {
        let store = KeyStore::new(dir, DEFAULT_MASTER_KEY_HANDLE)?;
        let mut tpm = EsapiTpm::connect(tcti)?;
        // The TPM answers and has its master key before an old entry is given up.
        tpm.ensure_master_key(DEFAULT_MASTER_KEY_HANDLE)?;
        if replace && store.list()?.iter().any(|n| n == name) {
            store.delete(name)?;
        }
        let entry = store.generate(&mut tpm, name)?;
        Ok(TpmKey {
            tpm: Mutex::new(tpm),
            entry,
        })
    }

    /// Opens the key `name`, creating it (and the master key) when the store has no
    /// entry of that name.
    pub fn open_or_create(tcti: &str, dir: &Path, name: &str) -> Result<TpmKey, Error> {
        match TpmKey::open(tcti, dir, name) {
            Err(Error::KeyNotFound { .. }) => TpmKey::create(tcti, dir, name, false),
            r => r,
        }
    }

    /// The public key, DER SubjectPublicKeyInfo (P-256).
    pub fn spki_der(&self) -> &[u8] {
        self.entry.spki_der()
    }

    /// The key store entry.
    pub fn entry(&self) -> &KeyEntry {
        &self.entry
    }

    /// ECDSA P-256 over SHA-256(`message`) inside the TPM: `r || s`.
    pub fn sign(&self, message: &[u8]) -> Result<[u8; 64], Error> {
        let mut tpm = self.tpm.lock().map_err(|_| Error::UnexpectedAnswer {
            op: "Sign",
            reason: "the TPM connection's lock is poisoned",
        })?;
        self.entry.sign(&mut *tpm, message)
    }
}

#[cfg(test)]
mod tests {
    use super::p256_pair;

    #[test]
    fn p256_pair_left_pads_each_half_and_refuses_long_integers() {
        let out = p256_pair(&[1, 2], &[3; 32]).unwrap();
        assert_eq!(out[..30], [0; 30]);
        assert_eq!(out[30..32], [1, 2]);
        assert_eq!(out[32..], [3; 32]);
        assert_eq!(p256_pair(&[], &[]), Some([0; 64]));
        assert_eq!(p256_pair(&[9; 33], &[1]), None);
        assert_eq!(p256_pair(&[1], &[9; 33]), None);
    }
}
