//! TPM identity: the device certificate (IDevID, or a vTPM DevID) and where it lives.

use der::{Decode as _, Encode as _, Reader as _, Tag, Tagged as _};
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::Error;

/// TCG's conventional NV index of the IDevID certificate.
pub const IDEVID_CERT_NV_INDEX: u32 = 0x01C9_0000;
/// TCG NV index of the RSA-2048 endorsement key certificate.
pub const EK_CERT_RSA_NV_INDEX: u32 = 0x01C0_0002;
/// TCG NV index of the ECC NIST P-256 endorsement key certificate.
pub const EK_CERT_ECC_NV_INDEX: u32 = 0x01C0_000A;
/// Owner-range NV index where a vTPM DevID certificate created by this crate is kept.
pub const DEFAULT_DEVID_CERT_NV_INDEX: u32 = 0x0180_0100;
/// Default persistent handle of the vTPM master key (the key store's parent).
pub const DEFAULT_MASTER_KEY_HANDLE: u32 = 0x8100_0101;
/// Default persistent handle of the vTPM DevID signing key.
pub const DEFAULT_DEVID_KEY_HANDLE: u32 = 0x8100_0102;

/// OID of the subject `serialNumber` attribute (X.520).
const OID_SERIAL_NUMBER: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.4.5");
/// OID of the subject `commonName` attribute.
const OID_COMMON_NAME: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3");
/// OID of the RFC 4108 HardwareModuleName other-name (IEEE 802.1AR DevIDs).
const OID_HARDWARE_MODULE_NAME: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.4");

/// What a device certificate says about the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// Device serial number: the subject's `serialNumber` attribute, else the
    /// HardwareModuleName `hwSerialNum` of the subjectAltName, else the certificate's
    /// serial number in hex.
    pub serial_number: String,
    /// Device model: the subject's common name, else the HardwareModuleName `hwType`
    /// OID; `None` when the certificate carries neither.
    pub model: Option<String>,
    /// Subject DN (RFC 4514 string).
    pub subject: String,
    /// Issuer DN (RFC 4514 string).
    pub issuer: String,
    /// notAfter as Unix seconds.
    pub not_after_unix: u64,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

/// Length of the DER element at the start of `bytes` (tag, length, contents), or
/// `None` when the header is malformed or longer than the input.
fn der_element_len(bytes: &[u8]) -> Option<usize> {
    let r = der::SliceReader::new(bytes).ok()?;
    let header = der::Header::peek(&r).ok()?;
    let total = (header.encoded_len().ok()? + header.length()).ok()?;
    let total = usize::try_from(total).ok()?;
    (total <= bytes.len()).then_some(total)
}

/// The text of a directory-string attribute value.
fn attr_text(value: &der::Any) -> Option<String> {
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString => {
            String::from_utf8(value.value().to_vec()).ok()
        }
        _ => None,
    }
}

/// Parses a device certificate (IDevID, DevID, EK) as read from an NV index: one DER
/// certificate, optionally followed by padding of all-zero or all-0xFF bytes (NV
/// indices are often defined larger than their contents). Anything else is an error.
pub fn parse_device_certificate(bytes: &[u8], source: &str) -> Result<DeviceIdentity, Error> {
    let bad = |reason: String| Error::Certificate {
        source_name: source.to_owned(),
        reason,
    };
    let len = der_element_len(bytes).ok_or_else(|| bad("not a DER certificate".into()))?;
    let padding = &bytes[len..];
    if !(padding.iter().all(|&b| b == 0) || padding.iter().all(|&b| b == 0xff)) {
        return Err(bad("trailing bytes after the certificate".into()));
    }
    let der = &bytes[..len];
    let cert = Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    let tbs = cert.tbs_certificate();
    let subject_attr = |oid| {
        tbs.subject()
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| attr_text(&a.value))
    };
    let mut hmn: Option<(String, String)> = None;
    if let Ok(Some((_, san))) = tbs.get_extension::<SubjectAltName>() {
        for name in san.0 {
            if let GeneralName::OtherName(other) = name
                && other.type_id == OID_HARDWARE_MODULE_NAME
            {
                hmn = parse_hardware_module_name(&other.value);
            }
        }
    }
    let serial_number = subject_attr(OID_SERIAL_NUMBER)
        .or_else(|| hmn.as_ref().map(|(_, serial)| serial.clone()))
        .unwrap_or_else(|| hex_upper(tbs.serial_number().as_bytes()));
    let model = subject_attr(OID_COMMON_NAME).or_else(|| hmn.map(|(hw_type, _)| hw_type));
    Ok(DeviceIdentity {
        serial_number,
        model,
        subject: tbs.subject().to_string(),
        issuer: tbs.issuer().to_string(),
        not_after_unix: tbs.validity().not_after.to_unix_duration().as_secs(),
        der: der.to_vec(),
    })
}

/// HardwareModuleName ::= SEQUENCE { hwType OBJECT IDENTIFIER, hwSerialNum OCTET STRING }
fn parse_hardware_module_name(value: &der::Any) -> Option<(String, String)> {
    if value.tag() != Tag::Sequence {
        return None;
    }
    let mut r = der::SliceReader::new(value.value()).ok()?;
    let hw_type: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::decode(&mut r).ok()?;
    let serial = der::asn1::OctetString::decode(&mut r).ok()?;
    r.finish().ok()?;
    let serial = match std::str::from_utf8(serial.as_bytes()) {
        Ok(s) if s.chars().all(|c| c.is_ascii_graphic() || c == ' ') => s.to_owned(),
        _ => hex_upper(serial.as_bytes()),
    };
    Some((hw_type.to_string(), serial))
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// A cloud whose platform provisions its own vTPM identity, so this crate must create
/// nothing.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudProvider {
    /// Microsoft Azure (Trusted Launch vTPM).
    Azure,
    /// Amazon Web Services (NitroTPM).
    Aws,
    /// Google Cloud (Shielded VM vTPM).
    Gcp,
}

/// The platform hook: tells whether the cloud provisions the vTPM identity itself.
/// Implement it for your platform; [`DmiPlatform`] recognises the three big clouds
/// from SMBIOS strings.
pub trait PlatformHook {
    /// `Some` when the platform provisions its own identity.
    fn cloud_provider(&self) -> Option<CloudProvider>;
}

/// SMBIOS/DMI strings (`/sys/class/dmi/id/{sys_vendor,product_name,bios_vendor}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DmiPlatform {
    /// `sys_vendor`.
    pub sys_vendor: String,
    /// `product_name`.
    pub product_name: String,
    /// `bios_vendor`.
    pub bios_vendor: String,
}

impl DmiPlatform {
    /// Reads the strings from `/sys/class/dmi/id` (missing files read as empty).
    pub fn from_sysfs() -> DmiPlatform {
        let read = |f: &str| {
            std::fs::read_to_string(format!("/sys/class/dmi/id/{f}"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        DmiPlatform {
            sys_vendor: read("sys_vendor"),
            product_name: read("product_name"),
            bios_vendor: read("bios_vendor"),
        }
    }
}

impl PlatformHook for DmiPlatform {
    fn cloud_provider(&self) -> Option<CloudProvider> {
        let v = self.sys_vendor.as_str();
        let p = self.product_name.as_str();
        let b = self.bios_vendor.as_str();
        if v == "Microsoft Corporation" && p == "Virtual Machine" {
            Some(CloudProvider::Azure)
        } else if v == "Amazon EC2" || b == "Amazon EC2" {
            Some(CloudProvider::Aws)
        } else if v == "Google" && p.starts_with("Google Compute Engine") {
            Some(CloudProvider::Gcp)
        } else {
            None
        }
    }
}

impl PlatformHook for Option<CloudProvider> {
    fn cloud_provider(&self) -> Option<CloudProvider> {
        *self
    }
}

/// Where the identity of this device comes from (result of provisioning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// A manufacturer IDevID certificate in the TPM: nothing created.
    IDevId(DeviceIdentity),
    /// The cloud provisions the vTPM identity: nothing created.
    Cloud(CloudProvider),
    /// A DevID and master key created earlier by this crate, found again.
    ExistingDevId(DeviceIdentity),
    /// A DevID certificate and master key created now.
    CreatedDevId(DeviceIdentity),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clouds_are_recognised_from_dmi() {
        let dmi = |v: &str, p: &str, b: &str| DmiPlatform {
            sys_vendor: v.into(),
            product_name: p.into(),
            bios_vendor: b.into(),
        };
        assert_eq!(
            dmi(
                "Microsoft Corporation",
                "Virtual Machine",
                "Microsoft Corporation"
            )
            .cloud_provider(),
            Some(CloudProvider::Azure)
        );
        assert_eq!(
            dmi("Amazon EC2", "m6i.large", "Amazon EC2").cloud_provider(),
            Some(CloudProvider::Aws)
        );
        assert_eq!(
            dmi("Google", "Google Compute Engine", "Google").cloud_provider(),
            Some(CloudProvider::Gcp)
        );
        assert_eq!(
            dmi("QEMU", "Standard PC (Q35 + ICH9, 2009)", "SeaBIOS").cloud_provider(),
            None
        );
        assert_eq!(
            dmi("Microsoft Corporation", "Surface Pro", "").cloud_provider(),
            None
        );
    }

    #[test]
    fn garbage_and_trailing_bytes_are_refused() {
        assert!(parse_device_certificate(&[], "t").is_err());
        assert!(parse_device_certificate(&[0x30, 0x82, 0xff, 0xff, 0], "t").is_err());
        assert!(parse_device_certificate(&[0x30, 0x03, 1, 2, 3, 0, 0], "t").is_err());
    }
}
