//! Signed manifests: an ES256 signature by a release key, carried in the manifest
//! document, checked against the release keys the configuration trusts (pure: no I/O).
//!
//! A signed manifest is the manifest's JSON object with one more member:
//!
//! ```json
//! {"format":1,"version":"7.1.3",...,"chunks":[...],
//!  "signature":{"alg":"ES256","key-id":"<64 hex>","sig":"<128 hex>"}}
//! ```
//!
//! `key-id` is the SHA-256 of the release key's DER `SubjectPublicKeyInfo`; `sig` is
//! the ECDSA P-256 / SHA-256 signature as `r || s` (32 bytes each, big-endian) over the
//! manifest's **canonical encoding**, [`Manifest::to_json`]: the document without
//! `signature`, members in the order above, no white space. The reader parses the
//! document strictly, re-encodes what it parsed canonically and verifies the signature
//! over those bytes, so what is verified is exactly what is used.

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::wire::{ChunkHash, MAX_DOCUMENT, ManifestDoc};
use crate::{Error, Manifest};

/// The only signature algorithm.
pub const SIGNATURE_ALG: &str = "ES256";

/// A trusted release public key (P-256).
#[derive(Clone, PartialEq, Eq)]
pub struct ReleaseKey {
    key: VerifyingKey,
    id: [u8; 32],
}

impl std::fmt::Debug for ReleaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReleaseKey({})", hex::encode(self.id))
    }
}

impl ReleaseKey {
    /// A key from its PEM `PUBLIC KEY` (SPKI), as `openssl pkey -pubout` writes it.
    pub fn from_pem(pem: &str) -> Result<ReleaseKey, Error> {
        let key =
            VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| Error::InvalidConfig {
                field: "manifest.release-keys",
                reason: format!("not a P-256 PUBLIC KEY PEM: {e}"),
            })?;
        Ok(ReleaseKey::from_key(key))
    }

    /// The public key of `signing`.
    pub fn of(signing: &SigningKey) -> ReleaseKey {
        ReleaseKey::from_key(*signing.verifying_key())
    }

    fn from_key(key: VerifyingKey) -> ReleaseKey {
        let der = key
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        ReleaseKey {
            key,
            id: Sha256::digest(der).into(),
        }
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo.
    pub fn id(&self) -> [u8; 32] {
        self.id
    }
}

/// Which manifests are accepted: signed by one of `keys`, or (only when
/// `allow_unsigned`) unsigned. The default trusts no key and refuses unsigned ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestTrust {
    /// Trusted release keys.
    pub keys: Vec<ReleaseKey>,
    /// Accept a manifest without a signature (a signature that is present must still
    /// verify against a trusted key).
    pub allow_unsigned: bool,
    /// Refuse manifests whose chunk digests are not SHA-256 (format 2, BLAKE3): for
    /// deployments that must use FIPS-approved hashes only.
    pub sha256_chunks_only: bool,
}

impl ManifestTrust {
    /// Whether chunk digests under `hash` are acceptable (`sha256_chunks_only`).
    pub fn allows(&self, hash: ChunkHash) -> bool {
        !self.sha256_chunks_only || hash == ChunkHash::Sha256
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SignatureDoc {
    alg: String,
    key_id: String,
    sig: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SignedDoc {
    format: u32,
    version: String,
    file: String,
    size: u64,
    sha256: String,
    chunk_size: u64,
    #[serde(default, deserialize_with = "crate::wire::present_string")]
    chunk_hash: Option<String>,
    chunks: Vec<String>,
    signature: Option<SignatureDoc>,
}

fn refused(reason: String) -> Error {
    Error::ManifestSignature(reason)
}

/// Parses a (signed) manifest document and checks its signature against `trust`.
pub fn verify_manifest(bytes: &[u8], trust: &ManifestTrust) -> Result<Manifest, Error> {
    if bytes.len() > MAX_DOCUMENT {
        return Err(Error::MalformedManifest("document too large".into()));
    }
    let doc: SignedDoc =
        serde_json::from_slice(bytes).map_err(|e| Error::MalformedManifest(e.to_string()))?;
    let manifest = Manifest::from_doc(ManifestDoc {
        format: doc.format,
        version: doc.version,
        file: doc.file,
        size: doc.size,
        sha256: doc.sha256,
        chunk_size: doc.chunk_size,
        chunk_hash: doc.chunk_hash,
        chunks: doc.chunks,
    })?;
    if !trust.allows(manifest.chunk_hash()) {
        return Err(refused(format!(
            "chunk-hash {} (the configuration accepts SHA-256 chunks only: sha256-chunks-only)",
            manifest.chunk_hash().name()
        )));
    }
    let Some(sig) = doc.signature else {
        // Unsigned means a plain manifest document (no `"signature": null`).
        Manifest::parse(bytes)?;
        return if trust.allow_unsigned {
            Ok(manifest)
        } else {
            Err(refused(
                "the manifest is not signed (configure manifest.release-keys, or allow-unsigned = true)"
                    .into(),
            ))
        };
    };
    if sig.alg != SIGNATURE_ALG {
        return Err(refused(format!(
            "signature algorithm {:?} (only ES256)",
            sig.alg.chars().take(20).collect::<String>()
        )));
    }
    let mut key_id = [0u8; 32];
    let mut raw = [0u8; 64];
    if sig.key_id.len() != 64
        || hex::decode_to_slice(&sig.key_id, &mut key_id).is_err()
        || sig.sig.len() != 128
        || hex::decode_to_slice(&sig.sig, &mut raw).is_err()
    {
        return Err(refused(
            "signature: key-id must be 64 and sig 128 hex digits".into(),
        ));
    }
    let Some(key) = trust.keys.iter().find(|k| k.id == key_id) else {
        return Err(refused(format!(
            "signed by key {}, which the configuration does not trust",
            hex::encode(key_id)
        )));
    };
    let signature = Signature::from_slice(&raw)
        .map_err(|_| refused("signature is not a valid r || s".into()))?;
    key.key
        .verify(&manifest.to_json(), &signature)
        .map_err(|_| {
            refused(format!(
                "the signature by key {} does not verify (tampered manifest?)",
                hex::encode(key_id)
            ))
        })?;
    Ok(manifest)
}

/// The signed manifest document of `manifest` (what a source publishes as
/// `manifest.json`).
pub fn sign_manifest(manifest: &Manifest, key: &SigningKey) -> Vec<u8> {
    let canonical = manifest.to_json();
    let signature: Signature = key.sign(&canonical);
    let sig = SignatureDoc {
        alg: SIGNATURE_ALG.into(),
        key_id: hex::encode(ReleaseKey::of(key).id),
        sig: hex::encode(signature.to_bytes()),
    };
    let sig_json = serde_json::to_vec(&sig).unwrap_or_default();
    // `{...}` + `,"signature":{...}}`: canonical members first, the signature last.
    let mut out = canonical;
    out.pop();
    out.extend_from_slice(b",\"signature\":");
    out.extend_from_slice(&sig_json);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn manifest() -> Manifest {
        Manifest::build("7.1.3", "ssr.img", &[5u8; 10_000], 4096).unwrap()
    }

    fn trust(keys: &[&SigningKey]) -> ManifestTrust {
        ManifestTrust {
            keys: keys.iter().map(|k| ReleaseKey::of(k)).collect(),
            ..ManifestTrust::default()
        }
    }

    #[test]
    fn signed_manifests_verify_and_tampering_is_refused() {
        let (k1, k2) = (key(1), key(2));
        let m = manifest();
        let signed = sign_manifest(&m, &k1);
        assert_eq!(verify_manifest(&signed, &trust(&[&k2, &k1])).unwrap(), m);
        // Another trusted key set: unknown signer.
        let e = verify_manifest(&signed, &trust(&[&k2])).unwrap_err();
        assert!(e.to_string().contains("does not trust"), "{e}");
        // A changed chunk digest, size or name: the signature no longer verifies.
        let text = String::from_utf8(signed.clone()).unwrap();
        let first_chunk = hex::encode(m.chunk_digest(0).unwrap());
        let other = hex::encode([0x11u8; 32]);
        for tampered in [
            text.replacen(&first_chunk, &other, 1),
            text.replacen("ssr.img", "ssr.imh", 1),
            text.replacen("7.1.3", "7.1.4", 1),
        ] {
            assert_ne!(tampered, text);
            let e = verify_manifest(tampered.as_bytes(), &trust(&[&k1])).unwrap_err();
            assert!(
                matches!(&e, Error::ManifestSignature(r) if r.contains("does not verify")),
                "{e}"
            );
        }
        // A flipped signature bit.
        let sig_at = text.find("\"sig\":\"").unwrap() + 7;
        let mut bad = text.clone().into_bytes();
        bad[sig_at] = if bad[sig_at] == b'0' { b'1' } else { b'0' };
        assert!(verify_manifest(&bad, &trust(&[&k1])).is_err());
        // Strict: an unknown member in the signature, or trailing bytes.
        let extra = text.replacen("\"alg\"", "\"x\":1,\"alg\"", 1);
        assert!(matches!(
            verify_manifest(extra.as_bytes(), &trust(&[&k1])),
            Err(Error::MalformedManifest(_))
        ));
        let null_hash = text.replacen("\"chunks\"", "\"chunk-hash\":null,\"chunks\"", 1);
        assert!(matches!(
            verify_manifest(null_hash.as_bytes(), &trust(&[&k1])),
            Err(Error::MalformedManifest(_))
        ));
        let alg = text.replacen("ES256", "ES384", 1);
        assert!(verify_manifest(alg.as_bytes(), &trust(&[&k1])).is_err());
    }

    #[test]
    fn unsigned_is_refused_unless_allowed() {
        let m = manifest();
        let e = verify_manifest(&m.to_json(), &ManifestTrust::default()).unwrap_err();
        assert!(e.to_string().contains("not signed"), "{e}");
        let e = verify_manifest(&m.to_json(), &trust(&[&key(1)])).unwrap_err();
        assert!(e.to_string().contains("not signed"), "{e}");
        let open = ManifestTrust {
            allow_unsigned: true,
            ..ManifestTrust::default()
        };
        assert_eq!(verify_manifest(&m.to_json(), &open).unwrap(), m);
        let null = String::from_utf8(m.to_json())
            .unwrap()
            .replacen('}', ",\"signature\":null}", 1);
        assert!(matches!(
            verify_manifest(null.as_bytes(), &open),
            Err(Error::MalformedManifest(_))
        ));
        // Allowing unsigned does not let a bad signature through.
        let signed = sign_manifest(&m, &key(1));
        assert!(verify_manifest(&signed, &open).is_err());
    }

    #[test]
    fn blake3_manifests_are_signed_over_their_format_2_encoding() {
        let k = key(4);
        let m = Manifest::build_with("7.1.3", "ssr.img", &[6u8; 10_000], 4096, ChunkHash::Blake3)
            .unwrap();
        let signed = sign_manifest(&m, &k);
        assert_eq!(verify_manifest(&signed, &trust(&[&k])).unwrap(), m);
        // The chunk hash is signed: naming another one breaks the signature (or the
        // format), never silently changes how chunks are checked.
        let text = String::from_utf8(signed.clone()).unwrap();
        let as_sha = text.replacen("\"format\":2", "\"format\":1", 1).replacen(
            ",\"chunk-hash\":\"blake3\"",
            "",
            1,
        );
        let e = verify_manifest(as_sha.as_bytes(), &trust(&[&k])).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        // A FIPS-minded configuration refuses it, signed or not.
        let strict = ManifestTrust {
            sha256_chunks_only: true,
            allow_unsigned: true,
            ..trust(&[&k])
        };
        for doc in [signed, m.to_json()] {
            let e = verify_manifest(&doc, &strict).unwrap_err();
            assert!(e.to_string().contains("sha256-chunks-only"), "{e}");
        }
        let sha = manifest();
        assert_eq!(
            verify_manifest(&sign_manifest(&sha, &k), &strict).unwrap(),
            sha
        );
    }

    #[test]
    fn release_keys_from_pem() {
        let k = key(3);
        let pem = k
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        let r = ReleaseKey::from_pem(&pem).unwrap();
        assert_eq!(r, ReleaseKey::of(&k));
        assert!(
            ReleaseKey::from_pem("-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n")
                .is_err()
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = verify_manifest(&bytes, &ManifestTrust::default());
        }
    }
}
