//! FEK sealing and unsealing over the [`Tpm`] trait.

use crate::{Error, Fek, FileMac, SealedFek};

/// First handle of the owner's persistent storage-key range (TCG handle registry).
pub const OWNER_PERSISTENT_FIRST: u32 = 0x8100_0000;
/// Last handle of the owner's persistent storage-key range.
pub const OWNER_PERSISTENT_LAST: u32 = 0x8100_FFFF;
/// The endorsement key's conventional handle: never used for our keys.
pub const EK_HANDLE: u32 = 0x8101_0001;
/// Default persistent handle of the FEK sealing key.
pub const DEFAULT_FEK_KEY_HANDLE: u32 = 0x8100_0100;
/// Default persistent handle of the HMAC key that authenticates the sealed-FEK file.
pub const DEFAULT_FEK_MAC_KEY_HANDLE: u32 = 0x8100_0110;

/// True for handles in 0x81000000-0x8100FFFF, where owner keys are persisted.
pub fn is_owner_persistent(handle: u32) -> bool {
    (OWNER_PERSISTENT_FIRST..=OWNER_PERSISTENT_LAST).contains(&handle)
}

pub(crate) fn check_owner_handle(what: &str, handle: u32) -> Result<(), Error> {
    if is_owner_persistent(handle) {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            reason: format!(
                "{what} handle {handle:#010x} is outside the owner range 0x81000000-0x8100ffff"
            ),
        })
    }
}

/// A set of PCRs of the SHA-256 bank (PCR 0-23), as a bit mask: bit *n* is PCR *n*.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PcrSelection(u32);

impl PcrSelection {
    /// No PCRs: not PCR-bound.
    pub const NONE: PcrSelection = PcrSelection(0);

    /// From a bit mask; bits above 23 are rejected.
    pub fn from_mask(mask: u32) -> Result<PcrSelection, Error> {
        if mask >> 24 != 0 {
            return Err(Error::InvalidConfig {
                reason: format!("PCR mask {mask:#x} selects PCRs above 23"),
            });
        }
        Ok(PcrSelection(mask))
    }

    /// From PCR indices (0-23), e.g. `[0, 2, 4, 7]`.
    ///
    /// ```
    /// use ssr_tpm::{PcrSelection, SealConfig};
    /// let cfg = SealConfig { pcrs: PcrSelection::from_indices(&[0, 7])?, ..SealConfig::default() };
    /// assert_eq!(cfg.pcrs.mask(), 0x81);
    /// assert!(PcrSelection::from_indices(&[24]).is_err());
    /// # Ok::<(), ssr_tpm::Error>(())
    /// ```
    pub fn from_indices(indices: &[u8]) -> Result<PcrSelection, Error> {
        let mut mask = 0u32;
        for &i in indices {
            if i > 23 {
                return Err(Error::InvalidConfig {
                    reason: format!("PCR {i} does not exist (0-23)"),
                });
            }
            mask |= 1 << i;
        }
        Ok(PcrSelection(mask))
    }

    /// The bit mask.
    pub fn mask(self) -> u32 {
        self.0
    }

    /// True when no PCR is selected.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The selected PCR indices, ascending.
    pub fn indices(self) -> impl Iterator<Item = u8> {
        (0u8..24).filter(move |i| self.0 & (1 << i) != 0)
    }
}

/// How to seal a new FEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealConfig {
    /// Persistent handle of the RSA-2048 sealing key (0x81000000-0x8100FFFF).
    pub key_handle: u32,
    /// PCRs the use of both keys is bound to (policy session); empty (the default) =
    /// not bound. An existing key must have been made with the same PCRs.
    pub pcrs: PcrSelection,
    /// Persistent handle of the HMAC-SHA-256 key that authenticates the sealed-FEK
    /// file (0x81000000-0x8100FFFF, not `key_handle`).
    pub mac_key_handle: u32,
}

impl Default for SealConfig {
    fn default() -> Self {
        SealConfig {
            key_handle: DEFAULT_FEK_KEY_HANDLE,
            pcrs: PcrSelection::NONE,
            mac_key_handle: DEFAULT_FEK_MAC_KEY_HANDLE,
        }
    }
}

/// What the TPM says about a persisted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// SHA-256 digest of the key's TPMT_PUBLIC (the TPM object Name without its
    /// algorithm prefix): covers the public key, its attributes and its auth policy.
    pub name_digest: [u8; 32],
    /// True when the key is usable only through a policy (userWithAuth clear).
    pub policy_bound: bool,
}

/// The TPM operations the sealing logic needs. Feature `esapi` implements it with
/// tss-esapi ([`crate::esapi::EsapiTpm`]); unit tests use a fake.
///
/// Contract for implementations: every call that carries the FEK ([`Tpm::random_fek`],
/// [`Tpm::rsa_encrypt_fek`], [`Tpm::rsa_decrypt_fek`]) runs in a session salted with
/// the sealing key and with parameter encryption in the direction the FEK travels, so
/// the clear FEK never crosses the TPM bus. Errors map to the distinct variants of
/// [`Error`] (`LockedOut`, `WrongTpm` for a failed decryption, `PcrMismatch`, ...).
pub trait Tpm {
    /// The Name digest of the object persisted at `handle` ([`KeyInfo::name_digest`]),
    /// or `None` when the handle is empty: the one lookup of an unlock.
    fn fek_key_name(&mut self, handle: u32) -> Result<Option<[u8; 32]>, Error>;

    /// The key persisted at `handle`, or `None` when the handle is empty. A key that
    /// is not an RSA-2048 OAEP-SHA-256 decryption key is an error. (For reports; to
    /// decide whether a key may be reused, see [`Tpm::our_fek_key`].)
    fn read_fek_key(&mut self, handle: u32) -> Result<Option<KeyInfo>, Error>;

    /// The key persisted at `handle` when its public area is exactly what
    /// [`Tpm::create_fek_key`] makes for `pcrs` (type, name algorithm, every attribute
    /// including fixedTPM, fixedParent, sensitiveDataOrigin, noDA and userWithAuth, the
    /// auth policy — empty, or PolicyPCR over the current values of `pcrs` — and the
    /// RSA-2048 OAEP-SHA-256 parameters; only the public key itself may differ);
    /// `None` when the handle is empty; [`Error::ForeignKey`] otherwise.
    fn our_fek_key(&mut self, handle: u32, pcrs: PcrSelection) -> Result<Option<KeyInfo>, Error>;

    /// Creates the sealing key (RSA-2048, decrypt, OAEP SHA-256, fixedTPM, noDA) under
    /// an owner storage primary and persists it at `handle`; with PCRs, the key is
    /// usable only through a PolicyPCR session over their current values.
    fn create_fek_key(&mut self, handle: u32, pcrs: PcrSelection) -> Result<KeyInfo, Error>;

    /// 32 bytes of TPM2_GetRandom, the response encrypted in a session salted with
    /// the key at `salt_key`.
    fn random_fek(&mut self, salt_key: u32) -> Result<Fek, Error>;

    /// TPM2_RSA_Encrypt of the FEK by the key at `handle` (OAEP SHA-256, empty label),
    /// the command parameter encrypted.
    fn rsa_encrypt_fek(&mut self, handle: u32, fek: &Fek) -> Result<Vec<u8>, Error>;

    /// The HMAC key at `handle` when its public area is exactly what
    /// [`Tpm::create_mac_key`] makes for `pcrs` (as [`Tpm::our_fek_key`]); `None` when
    /// the handle is empty; [`Error::ForeignKey`] otherwise.
    fn our_mac_key(&mut self, handle: u32, pcrs: PcrSelection) -> Result<Option<KeyInfo>, Error>;

    /// Creates the HMAC-SHA-256 key (keyed hash, sign, fixedTPM, fixedParent, noDA,
    /// the same auth policy as the sealing key) under an owner storage primary and
    /// persists it at `handle`.
    fn create_mac_key(&mut self, handle: u32, pcrs: PcrSelection) -> Result<KeyInfo, Error>;

    /// TPM2_HMAC (SHA-256) of `data` by the key at `mac_handle`, in a session salted
    /// with the sealing key at `salt_key`.
    fn hmac(
        &mut self,
        salt_key: u32,
        mac_handle: u32,
        pcrs: PcrSelection,
        data: &[u8],
    ) -> Result<[u8; 32], Error>;

    /// Checks the tag of a version-2 file, then decrypts: TPM2_HMAC of `data` by the
    /// key at `mac.key_handle`, compared in constant time with `mac.tag`
    /// ([`Error::NotAuthentic`] when it differs: nothing is decrypted), then
    /// TPM2_RSA_Decrypt by the key at `handle` (as [`Tpm::rsa_decrypt_fek`]).
    fn rsa_decrypt_fek_authenticated(
        &mut self,
        handle: u32,
        mac: &FileMac,
        pcrs: PcrSelection,
        data: &[u8],
        ciphertext: &[u8],
    ) -> Result<Fek, Error>;

    /// TPM2_RSA_Decrypt inside the TPM by the key at `handle`, the response encrypted;
    /// with PCRs, authorised by a PolicyPCR session.
    fn rsa_decrypt_fek(
        &mut self,
        handle: u32,
        pcrs: PcrSelection,
        ciphertext: &[u8],
    ) -> Result<Fek, Error>;
}

/// Makes a new FEK and seals it: creates and persists the sealing key if the handle
/// is empty, reuses it only when it is exactly the key this crate creates
/// ([`Tpm::our_fek_key`]; anything else is [`Error::ForeignKey`] and nothing is
/// changed), draws 32 bytes from TPM2_GetRandom, encrypts them inside the TPM, and
/// unseals the result once to check that the TPM gives the same FEK back (a key with
/// an authorisation value its public area does not show fails here, again
/// [`Error::ForeignKey`]). Write the [`SealedFek`] with [`SealedFek::write_atomic`].
pub fn seal_new_fek(tpm: &mut impl Tpm, cfg: &SealConfig) -> Result<(Fek, SealedFek), Error> {
    check_owner_handle("FEK key", cfg.key_handle)?;
    check_mac_handle(cfg)?;
    // Both handles are checked before anything is created.
    let existing = tpm.our_fek_key(cfg.key_handle, cfg.pcrs)?;
    let existing_mac = tpm.our_mac_key(cfg.mac_key_handle, cfg.pcrs)?;
    let key = match existing {
        Some(key) => key,
        None => tpm.create_fek_key(cfg.key_handle, cfg.pcrs)?,
    };
    let fek = tpm.random_fek(cfg.key_handle)?;
    let ciphertext = tpm.rsa_encrypt_fek(cfg.key_handle, &fek)?;
    // The sealing key must give the FEK back before anything else is made for it.
    let bare = SealedFek::new_v1(cfg.key_handle, key.name_digest, cfg.pcrs, ciphertext)?;
    verify_round_trip(tpm, &fek, &bare)?;
    let mac_key = match existing_mac {
        Some(key) => key,
        None => tpm.create_mac_key(cfg.mac_key_handle, cfg.pcrs)?,
    };
    let mac = FileMac {
        key_handle: cfg.mac_key_handle,
        key_fingerprint: mac_key.name_digest,
        tag: [0; 32],
    };
    let mut sealed = SealedFek::new(
        cfg.key_handle,
        key.name_digest,
        cfg.pcrs,
        bare.ciphertext().to_vec(),
        mac,
    )?;
    let tag = tpm.hmac(
        cfg.key_handle,
        cfg.mac_key_handle,
        cfg.pcrs,
        &sealed.authenticated_bytes(),
    )?;
    sealed.set_tag(tag);
    // And the file as written unseals, tag checked, to the same FEK.
    verify_round_trip(tpm, &fek, &sealed)?;
    Ok((fek, sealed))
}

fn check_mac_handle(cfg: &SealConfig) -> Result<(), Error> {
    check_owner_handle("HMAC key", cfg.mac_key_handle)?;
    if cfg.mac_key_handle == cfg.key_handle {
        return Err(Error::InvalidConfig {
            reason: format!(
                "the HMAC key handle {:#010x} is the sealing key's",
                cfg.mac_key_handle
            ),
        });
    }
    Ok(())
}

fn our_or_new_mac_key(tpm: &mut impl Tpm, cfg: &SealConfig) -> Result<KeyInfo, Error> {
    match tpm.our_mac_key(cfg.mac_key_handle, cfg.pcrs)? {
        Some(key) => Ok(key),
        None => tpm.create_mac_key(cfg.mac_key_handle, cfg.pcrs),
    }
}

/// Turns a version-1 sealed FEK (from an earlier release: not authenticated by the
/// TPM) into a version-2 one over the same ciphertext: creates the HMAC key at
/// `cfg.mac_key_handle` if it is empty (an existing one must be ours) and has the TPM
/// tag the file. Call it only after the caller has shown the version-1 file genuine
/// (its FEK unsealed and matched the keys of the encrypted data): the tag vouches
/// for whatever it is given. A version-2 file is returned unchanged.
pub fn authenticate_sealed_fek(
    tpm: &mut impl Tpm,
    sealed: &SealedFek,
    cfg: &SealConfig,
) -> Result<SealedFek, Error> {
    if sealed.is_authenticated() {
        return Ok(sealed.clone());
    }
    let cfg = SealConfig {
        key_handle: sealed.key_handle(),
        pcrs: sealed.pcrs(),
        mac_key_handle: cfg.mac_key_handle,
    };
    check_mac_handle(&cfg)?;
    let mac_key = our_or_new_mac_key(tpm, &cfg)?;
    let mac = FileMac {
        key_handle: cfg.mac_key_handle,
        key_fingerprint: mac_key.name_digest,
        tag: [0; 32],
    };
    let mut out = SealedFek::new(
        sealed.key_handle(),
        *sealed.key_fingerprint(),
        sealed.pcrs(),
        sealed.ciphertext().to_vec(),
        mac,
    )?;
    let tag = tpm.hmac(
        cfg.key_handle,
        cfg.mac_key_handle,
        cfg.pcrs,
        &out.authenticated_bytes(),
    )?;
    out.set_tag(tag);
    Ok(out)
}

/// Unseals the file bytes of a freshly sealed FEK once and compares: a FEK that the
/// TPM cannot give back must never encrypt a directory.
fn verify_round_trip(tpm: &mut impl Tpm, fek: &Fek, sealed: &SealedFek) -> Result<(), Error> {
    let handle = sealed.key_handle();
    let foreign = |reason: String| Error::ForeignKey { handle, reason };
    let back = match unseal_fek(tpm, &SealedFek::parse(&sealed.to_bytes())?) {
        Ok(back) => back,
        Err(e @ (Error::NoTpm { .. } | Error::LockedOut)) => return Err(e),
        Err(e) => {
            return Err(foreign(format!(
                "the FEK it sealed does not unseal ({e}): it has an authorisation this code does not know"
            )));
        }
    };
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        &back.secret_bytes()[..],
        &fek.secret_bytes()[..],
    )) {
        return Err(foreign("it unseals another value than it sealed".into()));
    }
    Ok(())
}

/// Unseals a FEK: checks that the keys at the recorded handles are the ones that
/// sealed and tagged it, has the TPM check the file's tag (version 2), then decrypts
/// inside the TPM. A version-1 file (an earlier release) has no tag: it is decrypted
/// after the key check alone, and the caller must vouch for the result (see
/// [`authenticate_sealed_fek`]).
///
/// Errors: [`Error::KeyMissing`] (empty handle), [`Error::WrongTpm`] (another key at
/// a handle, or the TPM cannot decrypt the blob), [`Error::NotAuthentic`] (the tag
/// does not verify: forged or damaged), [`Error::PcrMismatch`], [`Error::LockedOut`],
/// [`Error::NoTpm`] / [`Error::Tpm`] from the adapter.
pub fn unseal_fek(tpm: &mut impl Tpm, sealed: &SealedFek) -> Result<Fek, Error> {
    let handle = sealed.key_handle();
    check_name(
        tpm,
        handle,
        sealed.key_fingerprint(),
        "the key at this handle is not the sealing key",
    )?;
    match sealed.mac() {
        None => tpm.rsa_decrypt_fek(handle, sealed.pcrs(), sealed.ciphertext()),
        Some(mac) => {
            check_name(
                tpm,
                mac.key_handle,
                &mac.key_fingerprint,
                "the key at this handle is not the HMAC key",
            )?;
            tpm.rsa_decrypt_fek_authenticated(
                handle,
                mac,
                sealed.pcrs(),
                &sealed.authenticated_bytes(),
                sealed.ciphertext(),
            )
        }
    }
}

fn check_name(
    tpm: &mut impl Tpm,
    handle: u32,
    fingerprint: &[u8; 32],
    reason: &'static str,
) -> Result<(), Error> {
    let name = tpm
        .fek_key_name(handle)?
        .ok_or(Error::KeyMissing { handle })?;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&name[..], &fingerprint[..])) {
        return Err(Error::WrongTpm { handle, reason });
    }
    Ok(())
}
