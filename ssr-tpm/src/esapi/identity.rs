//! Device identity over ESAPI: reading certificates from NV, and the vTPM DevID.

use std::cell::RefCell;
use std::io::Write as _;

use tss_esapi::abstraction::nv::{self, NvOpenOptions};
use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::constants::Tss2ResponseCodeKind;
use tss_esapi::handles::{KeyHandle, NvIndexTpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::NvAuth;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{NvPublicBuilder, Public};

use super::keystore::{p256_point, p256_signing_template};
use super::{EsapiTpm, kind, storage_key_template, tpm_err};
use crate::Error;
use crate::identity::{
    DEFAULT_DEVID_CERT_NV_INDEX, DEFAULT_DEVID_KEY_HANDLE, DEFAULT_MASTER_KEY_HANDLE,
    DeviceIdentity, IDEVID_CERT_NV_INDEX, IdentitySource, PlatformHook, parse_device_certificate,
};
use crate::keystore::ecdsa_der;
use crate::seal::check_owner_handle;

/// Where the identity lives and what a created vTPM DevID says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// NV index of a manufacturer IDevID certificate (TCG: 0x01C90000).
    pub idevid_nv_index: u32,
    /// Owner NV index for a DevID certificate created by this crate.
    pub devid_nv_index: u32,
    /// Persistent handle of the master key (parent of the key store).
    pub master_key_handle: u32,
    /// Persistent handle of the DevID signing key.
    pub devid_key_handle: u32,
    /// Model written into a created DevID certificate (subject CN).
    pub model: String,
    /// Serial number written into a created DevID certificate (subject serialNumber).
    pub serial_number: String,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            idevid_nv_index: IDEVID_CERT_NV_INDEX,
            devid_nv_index: DEFAULT_DEVID_CERT_NV_INDEX,
            master_key_handle: DEFAULT_MASTER_KEY_HANDLE,
            devid_key_handle: DEFAULT_DEVID_KEY_HANDLE,
            model: "SSR vTPM router".to_owned(),
            serial_number: "unknown".to_owned(),
        }
    }
}

/// rcgen signs the DevID certificate through this: the TPM makes the signature.
struct TpmDevIdKey<'a> {
    tpm: RefCell<&'a mut EsapiTpm>,
    key: KeyHandle,
    point: [u8; 65],
}

impl rcgen::PublicKeyData for TpmDevIdKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for TpmDevIdKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(msg).into();
        let sig = self
            .tpm
            .borrow_mut()
            .sign_digest(self.key, &digest)
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        Ok(ecdsa_der(&sig))
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

impl EsapiTpm {
    /// True when an NV index is defined (one GetCapability).
    pub fn nv_index_exists(&mut self, index: u32) -> Result<bool, Error> {
        Ok(self.handles_in_use(index, index)?.contains(&index))
    }

    /// Reads a whole NV index with owner authorisation (empty owner password).
    /// [`Error::NvIndexMissing`] when it is not defined.
    pub fn read_nv(&mut self, index: u32) -> Result<Vec<u8>, Error> {
        if !self.nv_index_exists(index)? {
            return Err(Error::NvIndexMissing { index });
        }
        let handle = NvIndexTpmHandle::new(index).map_err(|e| tpm_err("NV index", e))?;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                nv::read_full(c, NvAuth::Owner, handle)
            })
            .map_err(|e| tpm_err("NV_Read", e))
    }

    /// The device certificate in an NV index (IDevID at 0x01C90000, EK certificates at
    /// 0x01C00002 / 0x01C0000A, ...), parsed; `None` when the index is not defined.
    pub fn read_device_identity(&mut self, index: u32) -> Result<Option<DeviceIdentity>, Error> {
        let r = self.read_device_identity_impl(index);
        self.lost_tpm(r)
    }

    fn read_device_identity_impl(&mut self, index: u32) -> Result<Option<DeviceIdentity>, Error> {
        match self.read_nv(index) {
            Ok(bytes) => {
                parse_device_certificate(&bytes, &format!("NV index {index:#010x}")).map(Some)
            }
            Err(Error::NvIndexMissing { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the master key (a restricted ECC P-256 storage key, noDA, fixedTPM) at
    /// `handle` unless a key is already there; returns its Name digest.
    pub fn ensure_master_key(&mut self, handle: u32) -> Result<[u8; 32], Error> {
        check_owner_handle("master key", handle)?;
        self.forget(handle);
        if self.is_persisted(handle)?
            && let Some(obj) = self.persistent(handle)?
        {
            return self.name_digest(obj);
        }
        let public = storage_key_template("master key template")?;
        self.create_persistent(handle, public)?;
        let obj = self
            .persistent(handle)?
            .ok_or(Error::KeyMissing { handle })?;
        self.name_digest(obj)
    }

    /// Establishes the device identity (SPEC 2.1, 2.2):
    ///
    /// 1. an IDevID certificate at `cfg.idevid_nv_index` wins: nothing is created;
    /// 2. when the platform hook names a cloud, the cloud provisions the vTPM: nothing
    ///    is created;
    /// 3. a DevID certificate and key and the master key made earlier are reused;
    /// 4. otherwise the master key, a DevID P-256 key (both persisted) and a
    ///    self-signed DevID certificate (signed inside the TPM, stored in
    ///    `cfg.devid_nv_index`) are created. `now_unix` is the certificate's notBefore.
    pub fn provision_identity(
        &mut self,
        cfg: &IdentityConfig,
        platform: &impl PlatformHook,
        now_unix: u64,
    ) -> Result<IdentitySource, Error> {
        let r = self.provision_identity_impl(cfg, platform, now_unix);
        self.lost_tpm(r)
    }

    fn provision_identity_impl(
        &mut self,
        cfg: &IdentityConfig,
        platform: &impl PlatformHook,
        now_unix: u64,
    ) -> Result<IdentitySource, Error> {
        check_owner_handle("master key", cfg.master_key_handle)?;
        check_owner_handle("DevID key", cfg.devid_key_handle)?;
        if let Some(id) = self.read_device_identity(cfg.idevid_nv_index)? {
            return Ok(IdentitySource::IDevId(id));
        }
        if let Some(cloud) = platform.cloud_provider() {
            return Ok(IdentitySource::Cloud(cloud));
        }
        let had_master = self.is_persisted(cfg.master_key_handle)?;
        let existing_cert = self.read_device_identity(cfg.devid_nv_index)?;
        let existing_key = self.is_persisted(cfg.devid_key_handle)?;
        if let (true, true, Some(id)) = (had_master, existing_key, existing_cert.clone()) {
            return Ok(IdentitySource::ExistingDevId(id));
        }
        self.ensure_master_key(cfg.master_key_handle)?;
        if !existing_key {
            self.create_persistent(cfg.devid_key_handle, p256_signing_template()?)?;
        }
        if let Some(id) = existing_cert {
            return Ok(IdentitySource::ExistingDevId(id));
        }
        let der = self.self_signed_devid(cfg, now_unix)?;
        self.write_nv(cfg.devid_nv_index, &der)?;
        let id = parse_device_certificate(&der, "created DevID")?;
        Ok(IdentitySource::CreatedDevId(id))
    }

    fn self_signed_devid(&mut self, cfg: &IdentityConfig, now_unix: u64) -> Result<Vec<u8>, Error> {
        let key = self
            .persistent(cfg.devid_key_handle)?
            .map(KeyHandle::from)
            .ok_or(Error::KeyMissing {
                handle: cfg.devid_key_handle,
            })?;
        self.count(1);
        let (public, _, _): (Public, _, _) = self
            .ctx
            .execute_without_session(|c| c.read_public(key))
            .map_err(|e| tpm_err("ReadPublic", e))?;
        let point = p256_point(&public)?;
        let cert_err = |e: rcgen::Error| Error::Certificate {
            source_name: "DevID".to_owned(),
            reason: e.to_string(),
        };
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cfg.model.as_str());
        params.distinguished_name.push(
            rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]),
            rcgen::DnValue::PrintableString(
                rcgen::string::PrintableString::try_from(cfg.serial_number.as_str())
                    .map_err(cert_err)?,
            ),
        );
        let (y, m, d) = civil_from_days((now_unix / 86_400) as i64);
        params.not_before = rcgen::date_time_ymd(y, m, d);
        // RFC 5280 4.1.2.5: no well-defined expiration date.
        params.not_after = rcgen::date_time_ymd(9999, 12, 31);
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let signer = TpmDevIdKey {
            tpm: RefCell::new(self),
            key,
            point,
        };
        let cert = params.self_signed(&signer).map_err(cert_err)?;
        Ok(cert.der().to_vec())
    }

    /// Defines an owner NV index of exactly `data.len()` bytes (ownerread, ownerwrite,
    /// authread, noDA) and writes `data` into it.
    pub fn write_nv(&mut self, index: u32, data: &[u8]) -> Result<(), Error> {
        let handle = NvIndexTpmHandle::new(index).map_err(|e| tpm_err("NV index", e))?;
        let attrs = NvIndexAttributesBuilder::new()
            .with_owner_write(true)
            .with_owner_read(true)
            .with_auth_read(true)
            .with_no_da(true)
            .build()
            .map_err(|e| tpm_err("NV attributes", e))?;
        let public = NvPublicBuilder::new()
            .with_nv_index(handle)
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(attrs)
            .with_data_area_size(data.len())
            .build()
            .map_err(|e| tpm_err("NV public", e))?;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                let mut rw = NvOpenOptions::NewIndex {
                    nv_public: public,
                    auth_handle: NvAuth::Owner,
                }
                .open(c)?;
                rw.write_all(data).map_err(|_| {
                    tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::InvalidParam)
                })
            })
            .map_err(|e| match kind(&e) {
                Some(Tss2ResponseCodeKind::NvDefined) => Error::InvalidConfig {
                    reason: format!("NV index {index:#010x} is already defined"),
                },
                _ => tpm_err("NV_DefineSpace/NV_Write", e),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn days_to_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
