//! The signature algorithm policy and signature verification (ring, via rustls-webpki's
//! algorithm table so that path validation and our own checks share one policy).

use der::Encode;
use der::asn1::ObjectIdentifier;
use rustls_pki_types::SignatureVerificationAlgorithm;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::Error;

/// Signature algorithms accepted anywhere in this crate: ECDSA on P-256 / P-384 with
/// SHA-256 / SHA-384, RSA PKCS#1 v1.5 and RSA-PSS with SHA-256/384/512 on 2048-8192-bit
/// keys. No SHA-1, no MD5, no small RSA, no other curves.
pub(crate) static POLICY_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// Known-weak signature algorithms, named so an operator sees why.
const WEAK: &[(&str, &str)] = &[
    ("1.2.840.113549.1.1.2", "md2WithRSAEncryption"),
    ("1.2.840.113549.1.1.4", "md5WithRSAEncryption"),
    ("1.2.840.113549.1.1.5", "sha1WithRSAEncryption"),
    ("1.3.14.3.2.29", "sha1WithRSASignature"),
    ("1.2.840.10045.4.1", "ecdsa-with-SHA1"),
    ("1.2.840.10040.4.3", "dsa-with-SHA1"),
];

const NAMED: &[(&str, &str)] = &[
    ("1.2.840.113549.1.1.11", "sha256WithRSAEncryption"),
    ("1.2.840.113549.1.1.12", "sha384WithRSAEncryption"),
    ("1.2.840.113549.1.1.13", "sha512WithRSAEncryption"),
    ("1.2.840.113549.1.1.10", "RSASSA-PSS"),
    ("1.2.840.10045.4.3.2", "ecdsa-with-SHA256"),
    ("1.2.840.10045.4.3.3", "ecdsa-with-SHA384"),
    ("1.2.840.10045.4.3.4", "ecdsa-with-SHA512"),
    ("1.3.101.112", "Ed25519"),
];

/// The algorithm's name when known, else its dotted OID.
pub(crate) fn algorithm_name(alg: &AlgorithmIdentifierOwned) -> String {
    oid_name(&alg.oid).unwrap_or_else(|| alg.oid.to_string())
}

fn oid_name(oid: &ObjectIdentifier) -> Option<String> {
    let dotted = oid.to_string();
    WEAK.iter()
        .chain(NAMED)
        .find(|(o, _)| *o == dotted)
        .map(|(_, n)| (*n).to_owned())
}

/// True when the algorithm is one of the known-weak ones (SHA-1, MD5, MD2).
pub(crate) fn is_weak(alg: &AlgorithmIdentifierOwned) -> bool {
    let dotted = alg.oid.to_string();
    WEAK.iter().any(|(o, _)| *o == dotted)
}

/// The DER contents (without the outer SEQUENCE header) of an AlgorithmIdentifier, the
/// form rustls-pki-types uses to name algorithms.
fn alg_id_contents(alg: &AlgorithmIdentifierOwned) -> Option<Vec<u8>> {
    let mut out = alg.oid.to_der().ok()?;
    if let Some(params) = &alg.parameters {
        out.extend(params.to_der().ok()?);
    }
    Some(out)
}

/// The policy algorithm matching a signature algorithm and a public key, if any.
pub(crate) fn policy_algorithm(
    spki: &SubjectPublicKeyInfoOwned,
    signature_alg: &AlgorithmIdentifierOwned,
) -> Option<&'static dyn SignatureVerificationAlgorithm> {
    let sig_id = alg_id_contents(signature_alg)?;
    let key_id = alg_id_contents(&spki.algorithm)?;
    POLICY_ALGORITHMS.iter().copied().find(|a| {
        a.signature_alg_id().as_ref() == sig_id && a.public_key_alg_id().as_ref() == key_id
    })
}

/// Verifies `signature` over `message` with the key in `spki`, if the algorithm pair is
/// within the policy.
pub(crate) fn verify(
    spki: &SubjectPublicKeyInfoOwned,
    signature_alg: &AlgorithmIdentifierOwned,
    message: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    let alg = policy_algorithm(spki, signature_alg).ok_or_else(|| {
        Error::UnsupportedSignatureAlgorithm {
            algorithm: algorithm_name(signature_alg),
        }
    })?;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or(Error::BadSignature)?;
    alg.verify_signature(key, message, signature)
        .map_err(|_| Error::BadSignature)
}

/// Reads one DER TLV header: (header length, content length).
fn tlv_header(bytes: &[u8]) -> Option<(usize, usize)> {
    let first_len = *bytes.get(1)?;
    if first_len < 0x80 {
        return Some((2, usize::from(first_len)));
    }
    let n = usize::from(first_len & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let len = bytes
        .get(2..2 + n)?
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    Some((2 + n, len))
}

/// The first element inside an outer SEQUENCE (the to-be-signed part of a certificate or
/// CRL), as the exact bytes received.
pub(crate) fn first_inner_element(signed: &[u8]) -> Option<&[u8]> {
    let (outer_header, _) = tlv_header(signed)?;
    let inner = signed.get(outer_header..)?;
    let (h, len) = tlv_header(inner)?;
    inner.get(..h.checked_add(len)?)
}

/// True when `alg` is the policy algorithm named by this signature AlgorithmIdentifier.
pub(crate) fn signature_alg_matches(
    alg: &dyn SignatureVerificationAlgorithm,
    signature_alg: &AlgorithmIdentifierOwned,
) -> bool {
    alg_id_contents(signature_alg).is_some_and(|id| alg.signature_alg_id().as_ref() == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_inner_element_takes_exact_bytes() {
        // SEQUENCE { SEQUENCE { 01 02 }, 05 00 }
        let der = [0x30, 0x06, 0x30, 0x02, 0x01, 0x02, 0x05, 0x00];
        assert_eq!(first_inner_element(&der), Some(&der[2..6]));
        // Long-form lengths.
        let mut long = vec![0x30, 0x81, 0x85, 0x30, 0x81, 0x80];
        long.extend([0u8; 0x80]);
        long.extend([0x05, 0x00]);
        assert_eq!(first_inner_element(&long).map(<[u8]>::len), Some(0x83));
        // Truncated or absurd inputs give None, never a panic.
        for bad in [&[][..], &[0x30], &[0x30, 0x85, 1, 2, 3, 4, 5], &der[..5]] {
            assert_eq!(first_inner_element(bad), None, "{bad:?}");
        }
    }
}
