//! The [`Tpm`] trait over tss-esapi 7.7 (feature `esapi`): a real TPM through
//! `device:/dev/tpmrm0`, or swtpm through `swtpm:host=127.0.0.1,port=P`.
//!
//! Every command that carries the FEK runs in an HMAC (or, when PCR-bound, policy)
//! session salted with the sealing key itself, with AES-128-CFB parameter encryption in
//! both directions. The salt is encrypted to the key whose Name the sealed file pins, so
//! only that TPM can derive the session key, and the FEK on the bus is ciphertext.

use std::collections::HashMap;
use std::str::FromStr as _;

use tss_esapi::Context;
use tss_esapi::attributes::{ObjectAttributes, ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::{PropertyTag, SessionType, Tss2ResponseCodeKind};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, Digest, EccPoint, HashScheme, PcrSelectionList, PcrSelectionListBuilder, PcrSlot, Public,
    PublicBuilder, PublicEccParameters, PublicEccParametersBuilder, PublicKeyRsa,
    PublicRsaParametersBuilder, RsaDecryptionScheme, RsaExponent, RsaScheme, SymmetricDefinition,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;

use crate::seal::check_owner_handle;
use crate::{Error, Fek, FileMac, KeyInfo, PcrSelection, Tpm};

/// A connection to a TPM through tss-esapi.
pub struct EsapiTpm {
    ctx: Context,
    tcti: String,
    /// ESYS objects for persistent handles, so one ReadPublic serves a whole unlock.
    objects: HashMap<u32, ObjectHandle>,
    commands: u64,
}

impl std::fmt::Debug for EsapiTpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsapiTpm")
            .field("tcti", &self.tcti)
            .field("commands", &self.commands)
            .finish_non_exhaustive()
    }
}

/// What a TPM is, for `ssr tpm info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmInfo {
    /// TPM_PT_MANUFACTURER as four ASCII characters (e.g. `IBM`, `INTC`, `MSFT`).
    pub manufacturer: String,
    /// TPM_PT_VENDOR_STRING_1..4, trimmed.
    pub vendor: String,
    /// TPM_PT_FIRMWARE_VERSION_1 and _2.
    pub firmware: (u32, u32),
    /// Specification revision (TPM_PT_REVISION, e.g. 164 for 1.64).
    pub spec_revision: u32,
    /// The FEK sealing key at its default handle, when present.
    pub fek_key: Option<KeyInfo>,
    /// Handle the FEK key was looked for at.
    pub fek_key_handle: u32,
}

fn kind(e: &tss_esapi::Error) -> Option<Tss2ResponseCodeKind> {
    match e {
        tss_esapi::Error::Tss2Error(rc) => rc.kind(),
        tss_esapi::Error::WrapperError(_) => None,
    }
}

/// The raw TSS2_RC of an error. tss-esapi 7.7 has no accessor for it; its `Debug`
/// output of the response code is `…Code { .0: <decimal>, … }`.
fn raw_rc(e: &tss_esapi::Error) -> Option<u32> {
    let tss_esapi::Error::Tss2Error(rc) = e else {
        return None;
    };
    let debug = format!("{rc:?}");
    let digits = debug.split(".0: ").nth(1)?;
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    digits[..end].parse().ok()
}

/// TSS2_RC layer of the TCTI (the transport to the TPM).
const TSS2_TCTI_RC_LAYER: u32 = 10;

/// Maps a TSS error: lockout and a lost transport are their own variants, the rest is
/// [`Error::Tpm`]. (A lost transport's TCTI is filled in by [`EsapiTpm::lost_tpm`].)
fn tpm_err(op: &'static str, e: tss_esapi::Error) -> Error {
    if let Some(rc) = raw_rc(&e)
        && rc >> 16 == TSS2_TCTI_RC_LAYER
    {
        return Error::NoTpm {
            tcti: String::new(),
            reason: format!("the TPM stopped answering during {op} (TCTI error {rc:#x})"),
        };
    }
    match kind(&e) {
        Some(Tss2ResponseCodeKind::Lockout) => Error::LockedOut,
        _ => Error::Tpm {
            op,
            reason: e.to_string(),
        },
    }
}

fn pcr_list(pcrs: PcrSelection) -> Result<PcrSelectionList, Error> {
    let slots = pcrs
        .indices()
        .map(|i| PcrSlot::try_from(1u32 << i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tpm_err("PCR selection", e))?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(|e| tpm_err("PCR selection", e))
}

fn oaep() -> RsaDecryptionScheme {
    RsaDecryptionScheme::Oaep(HashScheme::new(HashingAlgorithm::Sha256))
}

/// The storage-key template (ECC P-256, restricted decrypt, AES-128-CFB, fixedTPM,
/// fixedParent, noDA, empty unique) of both the owner storage primary and the master
/// key; `what` names the template in errors.
fn storage_key_template(what: &'static str) -> Result<Public, Error> {
    let attrs = tpm_bound_key_attributes()
        .with_user_with_auth(true)
        .with_decrypt(true)
        .with_restricted(true)
        .build()
        .map_err(|e| tpm_err(what, e))?;
    let params = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()
    .map_err(|e| tpm_err(what, e))?;
    ecc_public(attrs, params, what)
}

/// Attributes of every key this crate creates: it never leaves this TPM or its parent
/// (fixedTPM, fixedParent), its secret was made inside the TPM (sensitiveDataOrigin),
/// and, having no password, it is exempt from dictionary-attack lockout (noDA).
fn tpm_bound_key_attributes() -> ObjectAttributesBuilder {
    ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_no_da(true)
}

/// An ECC key template with a SHA-256 Name and an empty unique field; `what` names
/// the template in errors.
fn ecc_public(
    attrs: ObjectAttributes,
    params: PublicEccParameters,
    what: &'static str,
) -> Result<Public, Error> {
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(|e| tpm_err(what, e))
}

/// The type, name algorithm, attributes, auth policy and parameters of a public
/// area: everything but the unique field (the public key itself).
fn template_parts(p: &Public) -> (&'static str, ObjectAttributes, HashingAlgorithm, &Digest) {
    match p {
        Public::Rsa {
            object_attributes,
            name_hashing_algorithm,
            auth_policy,
            ..
        } => (
            "RSA",
            *object_attributes,
            *name_hashing_algorithm,
            auth_policy,
        ),
        Public::KeyedHash {
            object_attributes,
            name_hashing_algorithm,
            auth_policy,
            ..
        } => (
            "keyed-hash",
            *object_attributes,
            *name_hashing_algorithm,
            auth_policy,
        ),
        Public::Ecc {
            object_attributes,
            name_hashing_algorithm,
            auth_policy,
            ..
        } => (
            "ECC",
            *object_attributes,
            *name_hashing_algorithm,
            auth_policy,
        ),
        Public::SymCipher {
            object_attributes,
            name_hashing_algorithm,
            auth_policy,
            ..
        } => (
            "symmetric",
            *object_attributes,
            *name_hashing_algorithm,
            auth_policy,
        ),
    }
}

/// Why `actual` is not an object made from the template `expected` (all of the public
/// area but the unique field), or `None` when it is.
fn template_mismatch(actual: &Public, expected: &Public, pcrs: PcrSelection) -> Option<String> {
    let (kind, attrs, name_alg, policy) = template_parts(actual);
    let (want_kind, want_attrs, want_name_alg, want_policy) = template_parts(expected);
    if kind != want_kind {
        return Some(format!("it is a {kind} object, not {want_kind}"));
    }
    if attrs != want_attrs {
        return Some(format!(
            "its attributes are {:#010x}, expected {:#010x} (fixedTPM, fixedParent, sensitiveDataOrigin, noDA{}, ...)",
            tss_esapi::tss2_esys::TPMA_OBJECT::from(attrs),
            tss_esapi::tss2_esys::TPMA_OBJECT::from(want_attrs),
            if pcrs.is_empty() {
                ", userWithAuth"
            } else {
                ""
            },
        ));
    }
    if name_alg != want_name_alg {
        return Some("its name algorithm is not SHA-256".into());
    }
    if policy.value() != want_policy.value() {
        return Some(if pcrs.is_empty() {
            "it has an auth policy; ours has none".into()
        } else {
            "its auth policy is not PolicyPCR over the configured PCRs at their current values"
                .into()
        });
    }
    let params_equal = match (actual, expected) {
        (Public::Rsa { parameters: a, .. }, Public::Rsa { parameters: b, .. }) => {
            // An exponent of 0 means the default, 65537 (TPM 2.0 part 2, 12.2.3.5).
            let e = |p: &tss_esapi::structures::PublicRsaParameters| match p.exponent().value() {
                0 => 65537,
                v => v,
            };
            a.symmetric_definition_object() == b.symmetric_definition_object()
                && a.rsa_scheme() == b.rsa_scheme()
                && a.key_bits() == b.key_bits()
                && e(a) == e(b)
        }
        (Public::KeyedHash { parameters: a, .. }, Public::KeyedHash { parameters: b, .. }) => {
            a == b
        }
        _ => false,
    };
    if !params_equal {
        return Some(format!("its {kind} parameters differ from ours"));
    }
    None
}

impl EsapiTpm {
    /// Connects to the TPM at `tcti` (`device:/dev/tpmrm0`, `swtpm:host=…,port=…`,
    /// `mssim:…`). [`Error::NoTpm`] when nothing answers.
    pub fn connect(tcti: &str) -> Result<EsapiTpm, Error> {
        let no_tpm = |reason: String| Error::NoTpm {
            tcti: tcti.to_owned(),
            reason,
        };
        let conf = TctiNameConf::from_str(tcti)
            .map_err(|_| no_tpm("not a TCTI name (device:…, swtpm:…, mssim:…, tabrmd:…)".into()))?;
        // The TSS only says "response code not recognized" here; what it means is
        // that the TCTI could not open the device or socket.
        let ctx = Context::new(conf)
            .map_err(|_| no_tpm("nothing answers (the TCTI could not open it)".into()))?;
        Ok(EsapiTpm {
            ctx,
            tcti: tcti.to_owned(),
            objects: HashMap::new(),
            commands: 0,
        })
    }

    /// The TCTI this connection uses.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// How many TPM commands this connection has sent so far, counted at each call
    /// into ESAPI that reaches the TPM. Exact for an unlock (the swtpm integration test
    /// checks it against swtpm's own command log); provisioning steps are counted as
    /// if they succeeded, NV reads and writes are not counted.
    pub fn commands_sent(&self) -> u64 {
        self.commands
    }

    /// The underlying ESAPI context, for commands this crate does not wrap.
    pub fn context_mut(&mut self) -> &mut Context {
        &mut self.ctx
    }

    /// Names this connection's TCTI in an [`Error::NoTpm`] raised mid-session.
    pub(crate) fn lost_tpm<T>(&self, r: Result<T, Error>) -> Result<T, Error> {
        r.map_err(|e| match e {
            Error::NoTpm { tcti, reason } if tcti.is_empty() => Error::NoTpm {
                tcti: self.tcti.clone(),
                reason,
            },
            e => e,
        })
    }

    pub(crate) fn count(&mut self, n: u64) {
        self.commands += n;
    }

    /// Manufacturer, firmware and what this crate has provisioned.
    pub fn info(&mut self) -> Result<TpmInfo, Error> {
        self.info_for(crate::DEFAULT_FEK_KEY_HANDLE)
    }

    /// [`EsapiTpm::info`] with the FEK key looked for at `fek_key_handle`.
    pub fn info_for(&mut self, fek_key_handle: u32) -> Result<TpmInfo, Error> {
        let r = self.info_for_impl(fek_key_handle);
        self.lost_tpm(r)
    }

    fn info_for_impl(&mut self, fek_key_handle: u32) -> Result<TpmInfo, Error> {
        // tss-esapi reads all fixed properties with one GetCapability and caches them.
        self.count(1);
        let mut prop = |tag| {
            self.ctx
                .get_tpm_property(tag)
                .map(|v| v.unwrap_or(0))
                .map_err(|e| tpm_err("GetCapability", e))
        };
        let chars = |v: u32| -> String {
            v.to_be_bytes()
                .iter()
                .filter(|b| b.is_ascii_graphic())
                .map(|&b| char::from(b))
                .collect()
        };
        let manufacturer = chars(prop(PropertyTag::Manufacturer)?);
        let mut vendor = String::new();
        for tag in [
            PropertyTag::VendorString1,
            PropertyTag::VendorString2,
            PropertyTag::VendorString3,
            PropertyTag::VendorString4,
        ] {
            vendor.push_str(&chars(prop(tag)?));
        }
        let firmware = (
            prop(PropertyTag::FirmwareVersion1)?,
            prop(PropertyTag::FirmwareVersion2)?,
        );
        let spec_revision = prop(PropertyTag::Revision)?;
        let fek_key = self.read_fek_key(fek_key_handle)?;
        Ok(TpmInfo {
            manufacturer,
            vendor,
            firmware,
            spec_revision,
            fek_key,
            fek_key_handle,
        })
    }

    /// The TPM handles from `first` to `last` that are in use (TPM2_GetCapability
    /// TPM_CAP_HANDLES): persistent objects (0x81…) or NV indices (0x01…). Asking
    /// first keeps lookups of absent objects off the error path.
    pub fn handles_in_use(&mut self, first: u32, last: u32) -> Result<Vec<u32>, Error> {
        let mut out = Vec::new();
        let mut next = first;
        loop {
            self.count(1);
            let (data, more) = self
                .ctx
                .execute_without_session(|c| {
                    c.get_capability(tss_esapi::constants::CapabilityType::Handles, next, 64)
                })
                .map_err(|e| tpm_err("GetCapability", e))?;
            let tss_esapi::structures::CapabilityData::Handles(list) = data else {
                return Err(Error::UnexpectedAnswer {
                    op: "GetCapability",
                    reason: "not a handle list",
                });
            };
            let handles: Vec<u32> = list.into_inner().into_iter().map(u32::from).collect();
            let Some(&last_seen) = handles.last() else {
                break;
            };
            out.extend(handles.into_iter().filter(|h| (first..=last).contains(h)));
            if !more || last_seen >= last {
                break;
            }
            next = last_seen + 1;
        }
        Ok(out)
    }

    /// True when the TCTI goes through a resource manager (`device:/dev/tpmrm…`,
    /// `tabrmd`), which flushes a client's transient objects and sessions when it goes
    /// away and shows each client only its own.
    pub fn behind_resource_manager(&self) -> bool {
        let t = self.tcti.trim_start();
        t.starts_with("device:/dev/tpmrm") || t.starts_with("tabrmd")
    }

    /// Flushes the transient objects and sessions left in a TPM reached *without* a
    /// resource manager (`device:/dev/tpm0`, swtpm, mssim) by a process that died
    /// before flushing them (a SIGKILL, a power cut of the service mid-command): a raw
    /// TPM keeps them until its next TPM2_Startup(CLEAR), and three stale objects are
    /// enough for TPM_RC_OBJECT_MEMORY. The raw device admits one open file at a time,
    /// so whatever is loaded while this connection holds it belongs to no live user.
    /// Nothing is done behind a resource manager. Returns how many were flushed.
    pub fn flush_stale(&mut self) -> Result<usize, Error> {
        let r = self.flush_stale_impl();
        self.lost_tpm(r)
    }

    fn flush_stale_impl(&mut self) -> Result<usize, Error> {
        if self.behind_resource_manager() {
            return Ok(0);
        }
        // Transient objects, loaded sessions, saved (context-held) sessions.
        let mut stale = self.handles_in_use(0x8000_0000, 0x80ff_ffff)?;
        stale.extend(self.handles_in_use(0x0200_0000, 0x02ff_ffff)?);
        stale.extend(self.handles_in_use(0x0300_0000, 0x03ff_ffff)?);
        let mut flushed = 0;
        for handle in stale {
            let tpm_handle = TpmHandle::try_from(handle).map_err(|e| tpm_err("stale handle", e))?;
            self.count(1);
            let obj = match self
                .ctx
                .execute_without_session(|c| c.tr_from_tpm_public(tpm_handle))
            {
                Ok(obj) => obj,
                // Gone in between (another flush): nothing to do.
                Err(e) if kind(&e) == Some(Tss2ResponseCodeKind::Handle) => continue,
                Err(e) => return Err(tpm_err("ReadPublic (stale handle)", e)),
            };
            self.count(1);
            self.ctx
                .flush_context(obj)
                .map_err(|e| tpm_err("FlushContext (stale handle)", e))?;
            flushed += 1;
        }
        Ok(flushed)
    }

    /// True when an object is persisted at `handle` (one GetCapability).
    pub fn is_persisted(&mut self, handle: u32) -> Result<bool, Error> {
        Ok(self.handles_in_use(handle, handle)?.contains(&handle))
    }

    /// The ESYS object for a persistent handle (one ReadPublic the first time), or
    /// `None` when nothing is persisted there.
    pub(crate) fn persistent(&mut self, handle: u32) -> Result<Option<ObjectHandle>, Error> {
        if let Some(&obj) = self.objects.get(&handle) {
            return Ok(Some(obj));
        }
        let tpm_handle =
            PersistentTpmHandle::new(handle).map_err(|e| tpm_err("persistent handle", e))?;
        self.count(1);
        match self
            .ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(tpm_handle)))
        {
            Ok(obj) => {
                self.objects.insert(handle, obj);
                Ok(Some(obj))
            }
            Err(e) if kind(&e) == Some(Tss2ResponseCodeKind::Handle) => Ok(None),
            Err(e) => Err(tpm_err("ReadPublic", e)),
        }
    }

    /// Forgets the cached ESYS object of a persistent handle (after evicting it, or to
    /// re-read the TPM).
    pub(crate) fn forget(&mut self, handle: u32) {
        if let Some(mut obj) = self.objects.remove(&handle) {
            let _ = self.ctx.tr_close(&mut obj);
        }
    }

    /// The Name digest of the owner key `what` at `handle`, or `None` when nothing is
    /// persisted there. Always asks the TPM afresh: the key may have been replaced since.
    pub(crate) fn fresh_name_digest(
        &mut self,
        what: &'static str,
        handle: u32,
    ) -> Result<Option<[u8; 32]>, Error> {
        check_owner_handle(what, handle)?;
        self.forget(handle);
        match self.persistent(handle)? {
            Some(obj) => Ok(Some(self.name_digest(obj)?)),
            None => Ok(None),
        }
    }

    /// The SHA-256 Name digest of the object at `handle` (no TPM command: ESAPI
    /// computed it from the ReadPublic answer and checked it against the TPM's name).
    pub(crate) fn name_digest(&mut self, obj: ObjectHandle) -> Result<[u8; 32], Error> {
        let name = self
            .ctx
            .tr_get_name(obj)
            .map_err(|e| tpm_err("TR_GetName", e))?;
        let value = name.value();
        match value {
            [0x00, 0x0b, digest @ ..] if digest.len() == 32 => {
                let mut out = [0u8; 32];
                out.copy_from_slice(digest);
                Ok(out)
            }
            _ => Err(Error::UnexpectedAnswer {
                op: "ReadPublic",
                reason: "object name is not SHA-256",
            }),
        }
    }

    /// TPM2_StartAuthSession (SHA-256, unbound) salted with `salt_key` when given.
    fn start_session(
        &mut self,
        salt_key: Option<KeyHandle>,
        session_type: SessionType,
        symmetric: SymmetricDefinition,
    ) -> Result<AuthSession, Error> {
        self.count(1);
        self.ctx
            .execute_without_session(|c| {
                c.start_auth_session(
                    salt_key,
                    None,
                    None,
                    session_type,
                    symmetric,
                    HashingAlgorithm::Sha256,
                )
            })
            .map_err(|e| tpm_err("StartAuthSession", e))?
            .ok_or(Error::UnexpectedAnswer {
                op: "StartAuthSession",
                reason: "no session handle",
            })
    }

    /// Starts a session salted with `salt_key` (an RSA or ECC decryption key in the
    /// TPM) with AES-128-CFB parameter encryption in both directions.
    pub(crate) fn salted_session(
        &mut self,
        salt_key: ObjectHandle,
        session_type: SessionType,
    ) -> Result<AuthSession, Error> {
        let session = self.start_session(
            Some(KeyHandle::from(salt_key)),
            session_type,
            SymmetricDefinition::AES_128_CFB,
        )?;
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_decrypt(true)
            .with_encrypt(true)
            .with_continue_session(true)
            .build();
        if let Err(e) = self.ctx.tr_sess_set_attributes(session, attrs, mask) {
            self.flush_session(session);
            return Err(tpm_err("session attributes", e));
        }
        Ok(session)
    }

    pub(crate) fn flush_session(&mut self, session: AuthSession) {
        if session == AuthSession::Password {
            return;
        }
        self.count(1);
        let handle = tss_esapi::handles::SessionHandle::from(session);
        let _ = self.ctx.flush_context(ObjectHandle::from(handle));
    }

    /// Creates an owner-hierarchy storage primary (ECC P-256, restricted decrypt,
    /// AES-128-CFB, noDA): the same template always yields the same key from the
    /// owner seed, so it need not be persisted. Flush it after use.
    pub(crate) fn storage_primary(&mut self) -> Result<KeyHandle, Error> {
        let public = storage_key_template("primary template")?;
        // StartAuthSession + CreatePrimary + FlushContext(session).
        self.count(3);
        let created = self
            .ctx
            .execute_with_nullauth_session(|c| {
                c.create_primary(Hierarchy::Owner, public, None, None, None, None)
            })
            .map_err(|e| tpm_err("CreatePrimary", e))?;
        Ok(created.key_handle)
    }

    pub(crate) fn flush_object(&mut self, key: KeyHandle) {
        self.count(1);
        let _ = self.ctx.flush_context(ObjectHandle::from(key));
    }

    /// Creates a child of the storage primary from `public`, loads it and persists it
    /// at `handle` (owner authorisation, empty owner password).
    pub(crate) fn create_persistent(&mut self, handle: u32, public: Public) -> Result<(), Error> {
        check_owner_handle("key", handle)?;
        let persistent =
            PersistentTpmHandle::new(handle).map_err(|e| tpm_err("persistent handle", e))?;
        let primary = self.storage_primary()?;
        let result = (|| {
            // Session + Create + Load + EvictControl + FlushContext(session) + flush.
            self.count(6);
            let key = self
                .ctx
                .execute_with_nullauth_session(|c| {
                    let created = c.create(primary, public, None, None, None, None)?;
                    let key = c.load(primary, created.out_private, created.out_public)?;
                    let evicted = c.evict_control(
                        Provision::Owner,
                        ObjectHandle::from(key),
                        Persistent::Persistent(persistent),
                    );
                    let _ = c.flush_context(ObjectHandle::from(key));
                    evicted
                })
                .map_err(|e| match kind(&e) {
                    Some(Tss2ResponseCodeKind::NvDefined) => Error::InvalidConfig {
                        reason: format!("persistent handle {handle:#010x} is already in use"),
                    },
                    _ => tpm_err("create persistent key", e),
                })?;
            self.objects.insert(handle, key);
            Ok(())
        })();
        self.flush_object(primary);
        result
    }

    /// Policy digest of PolicyPCR over the current values of `pcrs` (trial session).
    fn pcr_policy_digest(&mut self, pcrs: PcrSelection) -> Result<Digest, Error> {
        let list = pcr_list(pcrs)?;
        let trial = self.start_session(None, SessionType::Trial, SymmetricDefinition::Null)?;
        let result = (|| {
            let policy = PolicySession::try_from(trial).map_err(|e| tpm_err("trial session", e))?;
            // PolicyPCR + PolicyGetDigest.
            self.count(2);
            self.ctx
                .execute_without_session(|c| {
                    c.policy_pcr(policy, Digest::default(), list)?;
                    c.policy_get_digest(policy)
                })
                .map_err(|e| tpm_err("PolicyPCR", e))
        })();
        self.flush_session(trial);
        result
    }

    /// The sealing keys' auth policy: empty (userWithAuth, empty auth) without PCRs,
    /// else the PolicyPCR digest of the current values of `pcrs`.
    fn auth_policy(&mut self, pcrs: PcrSelection) -> Result<Digest, Error> {
        if pcrs.is_empty() {
            Ok(Digest::default())
        } else {
            self.pcr_policy_digest(pcrs)
        }
    }

    fn fek_key_template(&mut self, pcrs: PcrSelection) -> Result<Public, Error> {
        let policy = self.auth_policy(pcrs)?;
        let attrs = tpm_bound_key_attributes()
            .with_user_with_auth(pcrs.is_empty())
            .with_decrypt(true)
            .with_sign_encrypt(false)
            .with_restricted(false)
            .build()
            .map_err(|e| tpm_err("key template", e))?;
        let params = PublicRsaParametersBuilder::new()
            .with_scheme(RsaScheme::Oaep(HashScheme::new(HashingAlgorithm::Sha256)))
            .with_key_bits(RsaKeyBits::Rsa2048)
            .with_exponent(RsaExponent::default())
            .with_is_decryption_key(true)
            .with_is_signing_key(false)
            .with_restricted(false)
            .with_symmetric(SymmetricDefinitionObject::Null)
            .build()
            .map_err(|e| tpm_err("key template", e))?;
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_auth_policy(policy)
            .with_rsa_parameters(params)
            .with_rsa_unique_identifier(PublicKeyRsa::default())
            .build()
            .map_err(|e| tpm_err("key template", e))
    }

    /// Runs `f` with a salted, parameter-encrypting session on the FEK key at
    /// `handle` (a policy session satisfied by PolicyPCR when `pcrs` is not empty), then
    /// flushes the session.
    fn with_fek_session<T>(
        &mut self,
        op: &'static str,
        handle: u32,
        pcrs: PcrSelection,
        f: impl FnOnce(&mut Context, KeyHandle) -> tss_esapi::Result<T>,
    ) -> Result<T, Error> {
        self.in_salted_session(handle, pcrs, |this, session, key| {
            this.policy_pcr_step(session, pcrs, handle)?;
            this.run_in_session(op, handle, session, |c| f(c, KeyHandle::from(key)))
        })
    }

    /// Starts a session salted with the sealing key at `salt_handle` (a policy session
    /// when `pcrs` is not empty), runs `f` with it and the key's ESYS object, then
    /// flushes the session.
    fn in_salted_session<T>(
        &mut self,
        salt_handle: u32,
        pcrs: PcrSelection,
        f: impl FnOnce(&mut Self, AuthSession, ObjectHandle) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let key = self.persistent(salt_handle)?.ok_or(Error::KeyMissing {
            handle: salt_handle,
        })?;
        let session_type = if pcrs.is_empty() {
            SessionType::Hmac
        } else {
            SessionType::Policy
        };
        let session = self.salted_session(key, session_type)?;
        let result = f(self, session, key);
        self.flush_session(session);
        result
    }

    /// TPM2_PolicyPCR over the current values of `pcrs` in a policy session (nothing
    /// when `pcrs` is empty); needed again before each use, since a policy session
    /// resets after authorising a command. `handle` names the key in errors.
    fn policy_pcr_step(
        &mut self,
        session: AuthSession,
        pcrs: PcrSelection,
        handle: u32,
    ) -> Result<(), Error> {
        if pcrs.is_empty() {
            return Ok(());
        }
        let list = pcr_list(pcrs)?;
        let policy = PolicySession::try_from(session).map_err(|e| tpm_err("policy session", e))?;
        self.count(1);
        self.ctx
            .execute_without_session(|c| c.policy_pcr(policy, Digest::default(), list))
            .map_err(|e| match kind(&e) {
                Some(
                    Tss2ResponseCodeKind::Value
                    | Tss2ResponseCodeKind::PolicyFail
                    | Tss2ResponseCodeKind::PcrChanged,
                ) => Error::PcrMismatch { handle },
                _ => tpm_err("PolicyPCR", e),
            })
    }

    /// One command authorised by `session` for the key at `handle`, its errors mapped
    /// to the variants the unlock path tells apart.
    fn run_in_session<T>(
        &mut self,
        op: &'static str,
        handle: u32,
        session: AuthSession,
        f: impl FnOnce(&mut Context) -> tss_esapi::Result<T>,
    ) -> Result<T, Error> {
        self.count(1);
        self.ctx
            .execute_with_session(Some(session), f)
            .map_err(|e| match kind(&e) {
                Some(
                    Tss2ResponseCodeKind::PolicyFail
                    | Tss2ResponseCodeKind::PcrChanged
                    | Tss2ResponseCodeKind::Policy,
                ) => Error::PcrMismatch { handle },
                Some(Tss2ResponseCodeKind::Lockout) => Error::LockedOut,
                // RSA_Decrypt: OAEP decoding failed (TPM_RC_VALUE) or the
                // ciphertext is out of range (TPM_RC_SIZE): not this key's blob.
                Some(
                    Tss2ResponseCodeKind::Value
                    | Tss2ResponseCodeKind::Size
                    | Tss2ResponseCodeKind::Integrity,
                ) if op == "RSA_Decrypt" => Error::WrongTpm {
                    handle,
                    reason: "the TPM cannot decrypt this blob",
                },
                // libtpms reports a failed OAEP decoding as TPM_RC_FAILURE; the
                // commands just before succeeded, so the TPM is not in failure mode.
                Some(Tss2ResponseCodeKind::Failure) if op == "RSA_Decrypt" => Error::WrongTpm {
                    handle,
                    reason: "the TPM cannot decrypt this blob",
                },
                _ => tpm_err(op, e),
            })
    }

    /// TPM2_HMAC (SHA-256) of `data` by the key at `mac_handle`, authorised by
    /// `session`.
    fn hmac_in_session(
        &mut self,
        session: AuthSession,
        mac_handle: u32,
        pcrs: PcrSelection,
        data: &[u8],
    ) -> Result<[u8; 32], Error> {
        let mac = self
            .persistent(mac_handle)?
            .ok_or(Error::KeyMissing { handle: mac_handle })?;
        let buffer = tss_esapi::structures::MaxBuffer::try_from(data.to_vec())
            .map_err(|e| tpm_err("HMAC", e))?;
        self.policy_pcr_step(session, pcrs, mac_handle)?;
        let digest = self.run_in_session("HMAC", mac_handle, session, |c| {
            c.hmac(mac, buffer, HashingAlgorithm::Sha256)
        })?;
        <[u8; 32]>::try_from(digest.value()).map_err(|_| Error::UnexpectedAnswer {
            op: "HMAC",
            reason: "not 32 bytes",
        })
    }

    /// The HMAC key template (keyed hash, HMAC-SHA-256, sign only, fixedTPM,
    /// fixedParent, sensitiveDataOrigin, noDA; the sealing key's auth policy).
    fn mac_key_template(&mut self, pcrs: PcrSelection) -> Result<Public, Error> {
        let policy = self.auth_policy(pcrs)?;
        let attrs = tpm_bound_key_attributes()
            .with_user_with_auth(pcrs.is_empty())
            .with_sign_encrypt(true)
            .with_decrypt(false)
            .with_restricted(false)
            .build()
            .map_err(|e| tpm_err("HMAC key template", e))?;
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_auth_policy(policy)
            .with_keyed_hash_parameters(tss_esapi::structures::PublicKeyedHashParameters::new(
                tss_esapi::structures::KeyedHashScheme::HMAC_SHA_256,
            ))
            .with_keyed_hash_unique_identifier(Digest::default())
            .build()
            .map_err(|e| tpm_err("HMAC key template", e))
    }

    /// The key at `handle` when its public area matches `expected` but for the unique
    /// field; `None` when the handle is empty; [`Error::ForeignKey`] otherwise.
    fn our_key_impl(
        &mut self,
        handle: u32,
        pcrs: PcrSelection,
        expected: impl FnOnce(&mut Self) -> Result<Public, Error>,
    ) -> Result<Option<KeyInfo>, Error> {
        check_owner_handle("key", handle)?;
        if !self.is_persisted(handle)? {
            return Ok(None);
        }
        let Some(name_digest) = self.fresh_name_digest("key", handle)? else {
            return Ok(None);
        };
        let obj = self
            .persistent(handle)?
            .ok_or(Error::KeyMissing { handle })?;
        self.count(1);
        let (public, _, _) = self
            .ctx
            .execute_without_session(|c| c.read_public(KeyHandle::from(obj)))
            .map_err(|e| tpm_err("ReadPublic", e))?;
        let expected = expected(self)?;
        if let Some(reason) = template_mismatch(&public, &expected, pcrs) {
            return Err(Error::ForeignKey { handle, reason });
        }
        Ok(Some(KeyInfo {
            name_digest,
            policy_bound: !pcrs.is_empty(),
        }))
    }
}

/// The bodies of the [`Tpm`] methods; the trait impl maps a lost TPM to
/// [`Error::NoTpm`] with this connection's TCTI.
impl EsapiTpm {
    fn fek_key_name_impl(&mut self, handle: u32) -> Result<Option<[u8; 32]>, Error> {
        self.fresh_name_digest("FEK key", handle)
    }

    fn read_fek_key_impl(&mut self, handle: u32) -> Result<Option<KeyInfo>, Error> {
        // Not on the unlock path: one GetCapability keeps an absent key off the TSS's
        // error log.
        if !self.is_persisted(handle)? {
            return Ok(None);
        }
        let Some(name_digest) = self.fek_key_name_impl(handle)? else {
            return Ok(None);
        };
        let Some(obj) = self.persistent(handle)? else {
            return Ok(None);
        };
        self.count(1);
        let (public, _, _) = self
            .ctx
            .execute_without_session(|c| c.read_public(KeyHandle::from(obj)))
            .map_err(|e| tpm_err("ReadPublic", e))?;
        let Public::Rsa {
            object_attributes,
            parameters,
            ..
        } = public
        else {
            return Err(Error::InvalidConfig {
                reason: format!("the object at {handle:#010x} is not an RSA key"),
            });
        };
        let oaep_ok = matches!(parameters.rsa_scheme(), RsaScheme::Oaep(h) if h.hashing_algorithm() == HashingAlgorithm::Sha256);
        if parameters.key_bits() != RsaKeyBits::Rsa2048
            || !object_attributes.decrypt()
            || object_attributes.restricted()
            || !oaep_ok
        {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "the key at {handle:#010x} is not an unrestricted RSA-2048 OAEP-SHA-256 decryption key"
                ),
            });
        }
        Ok(Some(KeyInfo {
            name_digest,
            policy_bound: !object_attributes.user_with_auth(),
        }))
    }

    fn our_fek_key_impl(
        &mut self,
        handle: u32,
        pcrs: PcrSelection,
    ) -> Result<Option<KeyInfo>, Error> {
        self.our_key_impl(handle, pcrs, |this| this.fek_key_template(pcrs))
    }

    fn our_mac_key_impl(
        &mut self,
        handle: u32,
        pcrs: PcrSelection,
    ) -> Result<Option<KeyInfo>, Error> {
        self.our_key_impl(handle, pcrs, |this| this.mac_key_template(pcrs))
    }

    fn create_mac_key_impl(&mut self, handle: u32, pcrs: PcrSelection) -> Result<KeyInfo, Error> {
        check_owner_handle("HMAC key", handle)?;
        let public = self.mac_key_template(pcrs)?;
        self.create_persistent(handle, public)?;
        self.our_mac_key_impl(handle, pcrs)?
            .ok_or(Error::KeyMissing { handle })
    }

    fn hmac_impl(
        &mut self,
        salt_key: u32,
        mac_handle: u32,
        pcrs: PcrSelection,
        data: &[u8],
    ) -> Result<[u8; 32], Error> {
        self.in_salted_session(salt_key, pcrs, |this, session, _| {
            this.hmac_in_session(session, mac_handle, pcrs, data)
        })
    }

    fn rsa_decrypt_fek_authenticated_impl(
        &mut self,
        handle: u32,
        mac: &FileMac,
        pcrs: PcrSelection,
        data: &[u8],
        ciphertext: &[u8],
    ) -> Result<Fek, Error> {
        let ct = PublicKeyRsa::try_from(ciphertext.to_vec()).map_err(|_| Error::Corrupt {
            what: "sealed FEK",
            reason: "ciphertext too long",
        })?;
        // One session for both: HMAC check, then the decryption.
        let clear = self.in_salted_session(handle, pcrs, |this, session, key| {
            let tag = this.hmac_in_session(session, mac.key_handle, pcrs, data)?;
            if !bool::from(subtle::ConstantTimeEq::ct_eq(&tag[..], &mac.tag[..])) {
                return Err(Error::NotAuthentic {
                    handle: mac.key_handle,
                });
            }
            this.policy_pcr_step(session, pcrs, handle)?;
            this.run_in_session("RSA_Decrypt", handle, session, |c| {
                c.rsa_decrypt(KeyHandle::from(key), ct, oaep(), Data::default())
            })
        })?;
        Fek::from_slice(clear.value()).map_err(|_| Error::WrongTpm {
            handle,
            reason: "decrypted value is not a 32-byte FEK",
        })
    }

    fn create_fek_key_impl(&mut self, handle: u32, pcrs: PcrSelection) -> Result<KeyInfo, Error> {
        check_owner_handle("FEK key", handle)?;
        let public = self.fek_key_template(pcrs)?;
        self.create_persistent(handle, public)?;
        self.read_fek_key_impl(handle)?
            .ok_or(Error::KeyMissing { handle })
    }

    fn random_fek_impl(&mut self, salt_key: u32) -> Result<Fek, Error> {
        let bytes = self.with_fek_session("GetRandom", salt_key, PcrSelection::NONE, |c, _| {
            c.get_random(crate::FEK_LEN)
        })?;
        Fek::from_slice(bytes.value())
    }

    fn rsa_encrypt_fek_impl(&mut self, handle: u32, fek: &Fek) -> Result<Vec<u8>, Error> {
        let message = PublicKeyRsa::try_from(fek.secret_bytes().to_vec())
            .map_err(|e| tpm_err("RSA_Encrypt", e))?;
        let ct = self.with_fek_session("RSA_Encrypt", handle, PcrSelection::NONE, |c, key| {
            c.rsa_encrypt(key, message, oaep(), Data::default())
        })?;
        Ok(ct.value().to_vec())
    }

    fn rsa_decrypt_fek_impl(
        &mut self,
        handle: u32,
        pcrs: PcrSelection,
        ciphertext: &[u8],
    ) -> Result<Fek, Error> {
        let ct = PublicKeyRsa::try_from(ciphertext.to_vec()).map_err(|_| Error::Corrupt {
            what: "sealed FEK",
            reason: "ciphertext too long",
        })?;
        let clear = self.with_fek_session("RSA_Decrypt", handle, pcrs, |c, key| {
            c.rsa_decrypt(key, ct, oaep(), Data::default())
        })?;
        Fek::from_slice(clear.value()).map_err(|_| Error::WrongTpm {
            handle,
            reason: "decrypted value is not a 32-byte FEK",
        })
    }
}

mod identity;
mod keystore;

pub use identity::IdentityConfig;
pub use keystore::TpmKey;

impl Tpm for EsapiTpm {
    fn fek_key_name(&mut self, handle: u32) -> Result<Option<[u8; 32]>, Error> {
        let r = self.fek_key_name_impl(handle);
        self.lost_tpm(r)
    }

    fn read_fek_key(&mut self, handle: u32) -> Result<Option<KeyInfo>, Error> {
        let r = self.read_fek_key_impl(handle);
        self.lost_tpm(r)
    }

    fn our_fek_key(&mut self, handle: u32, pcrs: PcrSelection) -> Result<Option<KeyInfo>, Error> {
        let r = self.our_fek_key_impl(handle, pcrs);
        self.lost_tpm(r)
    }

    fn our_mac_key(&mut self, handle: u32, pcrs: PcrSelection) -> Result<Option<KeyInfo>, Error> {
        let r = self.our_mac_key_impl(handle, pcrs);
        self.lost_tpm(r)
    }

    fn create_mac_key(&mut self, handle: u32, pcrs: PcrSelection) -> Result<KeyInfo, Error> {
        let r = self.create_mac_key_impl(handle, pcrs);
        self.lost_tpm(r)
    }

    fn hmac(
        &mut self,
        salt_key: u32,
        mac_handle: u32,
        pcrs: PcrSelection,
        data: &[u8],
    ) -> Result<[u8; 32], Error> {
        let r = self.hmac_impl(salt_key, mac_handle, pcrs, data);
        self.lost_tpm(r)
    }

    fn rsa_decrypt_fek_authenticated(
        &mut self,
        handle: u32,
        mac: &FileMac,
        pcrs: PcrSelection,
        data: &[u8],
        ciphertext: &[u8],
    ) -> Result<Fek, Error> {
        let r = self.rsa_decrypt_fek_authenticated_impl(handle, mac, pcrs, data, ciphertext);
        self.lost_tpm(r)
    }

    fn create_fek_key(&mut self, handle: u32, pcrs: PcrSelection) -> Result<KeyInfo, Error> {
        let r = self.create_fek_key_impl(handle, pcrs);
        self.lost_tpm(r)
    }

    fn random_fek(&mut self, salt_key: u32) -> Result<Fek, Error> {
        let r = self.random_fek_impl(salt_key);
        self.lost_tpm(r)
    }

    fn rsa_encrypt_fek(&mut self, handle: u32, fek: &Fek) -> Result<Vec<u8>, Error> {
        let r = self.rsa_encrypt_fek_impl(handle, fek);
        self.lost_tpm(r)
    }

    fn rsa_decrypt_fek(
        &mut self,
        handle: u32,
        pcrs: PcrSelection,
        ciphertext: &[u8],
    ) -> Result<Fek, Error> {
        let r = self.rsa_decrypt_fek_impl(handle, pcrs, ciphertext);
        self.lost_tpm(r)
    }
}
