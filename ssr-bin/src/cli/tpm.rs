//! `ssr tpm`: what the TPM is and what this system has provisioned in it.

use clap::Subcommand;
use ssr_tpm::esapi::EsapiTpm;
use ssr_tpm::identity::{
    DEFAULT_DEVID_CERT_NV_INDEX, DEFAULT_DEVID_KEY_HANDLE, DEFAULT_MASTER_KEY_HANDLE,
    DeviceIdentity, EK_CERT_ECC_NV_INDEX, EK_CERT_RSA_NV_INDEX,
};

use super::{CmdResult, Failure};

/// The TCTI used when neither `--tcti` nor `TPM2TOOLS_TCTI` says otherwise.
const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Manufacturer, firmware, and whether the FEK key, an IDevID, EK certificates,
    /// a vTPM DevID and the key-store master key exist.
    Info {
        /// TCTI of the TPM (`device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`);
        /// default: $TPM2TOOLS_TCTI, else device:/dev/tpmrm0.
        #[arg(long)]
        tcti: Option<String>,
        /// Persistent handle of the FEK sealing key.
        #[arg(long, value_parser = parse_handle, default_value = "0x81000100")]
        fek_handle: u32,
        /// NV index of the IDevID certificate.
        #[arg(long, value_parser = parse_handle, default_value = "0x01C90000")]
        idevid_index: u32,
    },
}

/// `--tcti`, else $TPM2TOOLS_TCTI, else device:/dev/tpmrm0.
pub(crate) fn tcti_or_default(tcti: Option<String>) -> String {
    tcti.or_else(|| std::env::var("TPM2TOOLS_TCTI").ok())
        .unwrap_or_else(|| DEFAULT_TCTI.to_owned())
}

fn parse_handle(s: &str) -> Result<u32, String> {
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or_else(|| format!("{s}: expected a hex handle like 0x81000100"))?;
    u32::from_str_radix(hex, 16).map_err(|e| format!("{s}: {e}"))
}

pub fn run(cmd: Cmd) -> CmdResult {
    match cmd {
        Cmd::Info {
            tcti,
            fek_handle,
            idevid_index,
        } => {
            let tcti = tcti_or_default(tcti);
            print!("{}", info(&tcti, fek_handle, idevid_index)?);
            Ok(())
        }
    }
}

fn fail(e: ssr_tpm::Error) -> Failure {
    Failure::general(format!("tpm info: {e}"))
}

fn describe_cert(id: Option<DeviceIdentity>) -> String {
    match id {
        Some(id) => format!(
            "present (serial {}, model {}, issuer {})",
            id.serial_number,
            id.model.as_deref().unwrap_or("-"),
            id.issuer
        ),
        None => "absent".to_owned(),
    }
}

/// A certificate that does not parse is reported, not fatal: the rest of the report
/// still matters.
fn cert_line(tpm: &mut EsapiTpm, index: u32) -> Result<String, Failure> {
    match tpm.read_device_identity(index) {
        Ok(id) => Ok(describe_cert(id)),
        Err(e @ ssr_tpm::Error::Certificate { .. }) => Ok(format!("unreadable ({e})")),
        Err(e) => Err(fail(e)),
    }
}

fn present(yes: bool) -> &'static str {
    if yes { "present" } else { "absent" }
}

/// The report printed by `ssr tpm info`.
pub fn info(tcti: &str, fek_handle: u32, idevid_index: u32) -> Result<String, Failure> {
    let mut tpm = EsapiTpm::connect(tcti).map_err(fail)?;
    let i = tpm.info_for(fek_handle).map_err(fail)?;
    let (fw1, fw2) = i.firmware;
    let mut out = String::new();
    out.push_str(&format!("TCTI:            {tcti}\n"));
    out.push_str(&format!("Manufacturer:    {}\n", i.manufacturer));
    out.push_str(&format!("Vendor string:   {}\n", i.vendor));
    // The split of the two firmware words is vendor-specific: print them raw.
    out.push_str(&format!("Firmware:        {fw1:08x}.{fw2:08x}\n"));
    out.push_str(&format!(
        "Spec revision:   {}.{:02}\n",
        i.spec_revision / 100,
        i.spec_revision % 100
    ));
    let fek = match &i.fek_key {
        Some(k) => format!(
            "present at {fek_handle:#010x} ({}, name {})",
            if k.policy_bound {
                "PCR-bound"
            } else {
                "not PCR-bound"
            },
            hex::encode(&k.name_digest[..8])
        ),
        None => format!("absent at {fek_handle:#010x}"),
    };
    out.push_str(&format!("FEK key:         {fek}\n"));
    out.push_str(&format!(
        "IDevID:          {}\n",
        cert_line(&mut tpm, idevid_index)?
    ));
    out.push_str(&format!(
        "EK cert (RSA):   {}\n",
        cert_line(&mut tpm, EK_CERT_RSA_NV_INDEX)?
    ));
    out.push_str(&format!(
        "EK cert (ECC):   {}\n",
        cert_line(&mut tpm, EK_CERT_ECC_NV_INDEX)?
    ));
    out.push_str(&format!(
        "DevID cert:      {}\n",
        cert_line(&mut tpm, DEFAULT_DEVID_CERT_NV_INDEX)?
    ));
    let devid_key = tpm.is_persisted(DEFAULT_DEVID_KEY_HANDLE).map_err(fail)?;
    let master = tpm.is_persisted(DEFAULT_MASTER_KEY_HANDLE).map_err(fail)?;
    out.push_str(&format!(
        "DevID key:       {} at {DEFAULT_DEVID_KEY_HANDLE:#010x}\n",
        present(devid_key)
    ));
    out.push_str(&format!(
        "Master key:      {} at {DEFAULT_MASTER_KEY_HANDLE:#010x}\n",
        present(master)
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssr_tpm::identity::IDEVID_CERT_NV_INDEX;

    #[test]
    fn info_describes_a_fresh_and_a_provisioned_swtpm() {
        let swtpm = ssr_testkit::Swtpm::start().unwrap();
        let report = info(&swtpm.tcti(), 0x8100_0100, IDEVID_CERT_NV_INDEX).unwrap();
        assert!(report.contains("Manufacturer:    IBM"), "{report}");
        assert!(
            report.contains("FEK key:         absent at 0x81000100"),
            "{report}"
        );
        assert!(report.contains("IDevID:          absent"), "{report}");

        let mut tpm = EsapiTpm::connect(&swtpm.tcti()).unwrap();
        ssr_tpm::seal_new_fek(&mut tpm, &ssr_tpm::SealConfig::default()).unwrap();
        tpm.provision_identity(&Default::default(), &None, 1_764_000_000)
            .unwrap();
        drop(tpm);
        let report = info(&swtpm.tcti(), 0x8100_0100, IDEVID_CERT_NV_INDEX).unwrap();
        assert!(
            report.contains("FEK key:         present at 0x81000100 (not PCR-bound"),
            "{report}"
        );
        assert!(
            report.contains("DevID cert:      present (serial unknown, model SSR vTPM router"),
            "{report}"
        );
        assert!(report.contains("Master key:      present"), "{report}");
    }

    #[test]
    fn no_tpm_is_one_line() {
        let swtpm = ssr_testkit::Swtpm::start().unwrap();
        let tcti = swtpm.tcti();
        drop(swtpm);
        let err = info(&tcti, 0x8100_0100, IDEVID_CERT_NV_INDEX).unwrap_err();
        assert!(
            err.message.starts_with("tpm info: no TPM at swtpm:"),
            "{err}"
        );
        assert!(!err.message.contains('\n'));
    }

    #[test]
    fn handles_parse_as_hex() {
        assert_eq!(parse_handle("0x81000100"), Ok(0x8100_0100));
        assert!(parse_handle("81000100").is_err());
        assert!(parse_handle("0xZZ").is_err());
    }
}
