//! The TPM-bound key store: one freshly generated P-256 key pair per certificate, its
//! private part on disk only as a TPM2_Create blob wrapped by the master key, so only
//! the TPM holding that master key can load it.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::{Error, fsutil};

/// Magic at the start of a key store entry.
pub const KEY_ENTRY_MAGIC: [u8; 4] = *b"SKEY";
/// The only key store entry version.
pub const KEY_ENTRY_VERSION: u8 = 1;
/// Largest TPM blob (public or private) an entry may hold.
const MAX_BLOB: usize = 1024;
/// Largest entry file.
const MAX_ENTRY: usize = 8 + 4 + 32 + 1 + 64 + 3 * (2 + MAX_BLOB) + 32;
/// File name suffix of entries.
const SUFFIX: &str = ".key";
/// The key store name of the router's own key (SPEC 3.4): the one key that signs the
/// router's CSR, its onboarding proof of possession and its SVR peer authentication.
pub const ROUTER_KEY_NAME: &str = "router";

/// A key as the TPM hands it out: the wrapped private blob and the public parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// TPMT_PUBLIC as marshalled by the TPM (for TPM2_Load).
    pub tpm_public: Vec<u8>,
    /// TPM2B_PRIVATE contents: encrypted and integrity-protected by the parent (master)
    /// key's seed, meaningless to any other TPM.
    pub tpm_private: Vec<u8>,
    /// The public key as a DER SubjectPublicKeyInfo (P-256), for certificates.
    pub spki_der: Vec<u8>,
}

/// The TPM operations of the key store; feature `esapi` implements it.
pub trait KeyStoreTpm {
    /// Name digest of the master key persisted at `handle`, `None` when absent.
    fn master_key_name(&mut self, handle: u32) -> Result<Option<[u8; 32]>, Error>;
    /// TPM2_Create of a P-256 signing key (fixedTPM, fixedParent, noDA) under the
    /// master key.
    fn create_wrapped_key(&mut self, master: u32) -> Result<WrappedKey, Error>;
    /// TPM2_Load under the master key, then TPM2_Sign of a SHA-256 `digest`: ECDSA
    /// `r || s`. A blob that this TPM cannot load is [`Error::WrongTpm`].
    fn sign_with_wrapped_key(
        &mut self,
        master: u32,
        key: &WrappedKey,
        digest: &[u8; 32],
    ) -> Result<[u8; 64], Error>;
}

/// One key store entry (one file).
///
/// Version 1, big-endian: magic `SKEY`, version 1, algorithm 1 (ECDSA P-256 SHA-256,
/// TPM-wrapped), 2 reserved zero bytes, the master key's persistent handle (4) and Name
/// digest (32), the name (1-byte length + 1-64 bytes), then three 2-byte-length-prefixed
/// blobs: TPM public, TPM private, SPKI DER (each at most 1024 bytes), and a SHA-256
/// of everything before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    name: String,
    master_handle: u32,
    master_name: [u8; 32],
    key: WrappedKey,
}

const CORRUPT: fn(&'static str) -> Error = |reason| Error::Corrupt {
    what: "key store entry",
    reason,
};

/// Checks a key name: 1-64 of `A-Z a-z 0-9 . _ -`, not starting with a dot.
///
/// ```
/// use ssr_tpm::keystore::check_key_name;
/// assert!(check_key_name("web-server.1").is_ok());
/// assert!(check_key_name("../etc/passwd").is_err());
/// ```
pub fn check_key_name(name: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidKeyName {
            name: name.to_owned(),
        })
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.0.len() < n {
            return Err(CORRUPT("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn blob(&mut self, what: &'static str) -> Result<Vec<u8>, Error> {
        let len = self.take(2)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len == 0 || len > MAX_BLOB {
            return Err(CORRUPT(what));
        }
        Ok(self.take(len)?.to_vec())
    }
}

impl KeyEntry {
    /// An entry from its parts.
    pub fn new(
        name: &str,
        master_handle: u32,
        master_name: [u8; 32],
        key: WrappedKey,
    ) -> Result<KeyEntry, Error> {
        check_key_name(name)?;
        crate::seal::check_owner_handle("master key", master_handle)?;
        for blob in [&key.tpm_public, &key.tpm_private, &key.spki_der] {
            if blob.is_empty() || blob.len() > MAX_BLOB {
                return Err(Error::UnexpectedAnswer {
                    op: "Create",
                    reason: "key blob empty or larger than 1024 bytes",
                });
            }
        }
        Ok(KeyEntry {
            name: name.to_owned(),
            master_handle,
            master_name,
            key,
        })
    }

    /// Strict parser: known magic/version/algorithm, zero reserved bytes, a valid name,
    /// bounded non-empty blobs, a valid checksum, no trailing bytes.
    pub fn parse(bytes: &[u8]) -> Result<KeyEntry, Error> {
        if bytes.len() < 8 + 32 {
            return Err(CORRUPT("truncated"));
        }
        if bytes.len() > MAX_ENTRY {
            return Err(CORRUPT("too long"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if body[0..4] != KEY_ENTRY_MAGIC {
            return Err(CORRUPT("bad magic"));
        }
        if body[4] != KEY_ENTRY_VERSION {
            return Err(CORRUPT("unknown version"));
        }
        if !bool::from(Sha256::digest(body).as_slice().ct_eq(sum)) {
            return Err(CORRUPT("checksum mismatch"));
        }
        if body[5] != 1 {
            return Err(CORRUPT("unknown algorithm"));
        }
        if body[6..8] != [0, 0] {
            return Err(CORRUPT("reserved bytes not zero"));
        }
        let mut c = Cursor(&body[8..]);
        let h = c.take(4)?;
        let master_handle = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        if !crate::is_owner_persistent(master_handle) {
            return Err(CORRUPT("master handle outside 0x81000000-0x8100ffff"));
        }
        let mut master_name = [0u8; 32];
        master_name.copy_from_slice(c.take(32)?);
        let name_len = usize::from(c.take(1)?[0]);
        let name = std::str::from_utf8(c.take(name_len)?).map_err(|_| CORRUPT("bad name"))?;
        check_key_name(name).map_err(|_| CORRUPT("bad name"))?;
        let tpm_public = c.blob("bad TPM public blob")?;
        let tpm_private = c.blob("bad TPM private blob")?;
        let spki_der = c.blob("bad public key")?;
        if !c.0.is_empty() {
            return Err(CORRUPT("trailing bytes"));
        }
        Ok(KeyEntry {
            name: name.to_owned(),
            master_handle,
            master_name,
            key: WrappedKey {
                tpm_public,
                tpm_private,
                spki_der,
            },
        })
    }

    /// The file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&KEY_ENTRY_MAGIC);
        out.extend_from_slice(&[KEY_ENTRY_VERSION, 1, 0, 0]);
        out.extend_from_slice(&self.master_handle.to_be_bytes());
        out.extend_from_slice(&self.master_name);
        // Lengths are bounded by `new` / `parse` (name <= 64, blobs <= 1024).
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        for blob in [
            &self.key.tpm_public,
            &self.key.tpm_private,
            &self.key.spki_der,
        ] {
            out.extend_from_slice(&(blob.len() as u16).to_be_bytes());
            out.extend_from_slice(blob);
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// The key's name in the store.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key, DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.key.spki_der
    }

    /// The TPM blobs and public key.
    pub fn wrapped(&self) -> &WrappedKey {
        &self.key
    }

    /// The persistent handle of the master key that wraps it.
    pub fn master_handle(&self) -> u32 {
        self.master_handle
    }

    /// Signs `message` (ECDSA P-256 over its SHA-256) inside the TPM: loads the wrapped
    /// key under the master key first. Returns `r || s`; see [`ecdsa_der`] for the DER
    /// form. [`Error::WrongTpm`] when this TPM's master key is not the one that wrapped
    /// the key (the files were copied from another device).
    pub fn sign(&self, tpm: &mut impl KeyStoreTpm, message: &[u8]) -> Result<[u8; 64], Error> {
        let name = tpm
            .master_key_name(self.master_handle)?
            .ok_or(Error::KeyMissing {
                handle: self.master_handle,
            })?;
        if !bool::from(name.ct_eq(&self.master_name)) {
            return Err(Error::WrongTpm {
                handle: self.master_handle,
                reason: "the master key at this handle did not wrap this key",
            });
        }
        let digest: [u8; 32] = Sha256::digest(message).into();
        tpm.sign_with_wrapped_key(self.master_handle, &self.key, &digest)
    }
}

/// DER `Ecdsa-Sig-Value` (SEQUENCE of two INTEGERs) from `r || s`.
pub fn ecdsa_der(sig: &[u8; 64]) -> Vec<u8> {
    fn int(v: &[u8]) -> Vec<u8> {
        let start = v.iter().position(|&b| b != 0).unwrap_or(v.len() - 1);
        let v = &v[start..];
        let mut out = vec![0x02];
        let pad = v[0] & 0x80 != 0;
        out.push((v.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
        out
    }
    let (r, s) = (int(&sig[..32]), int(&sig[32..]));
    let mut out = vec![0x30, (r.len() + s.len()) as u8];
    out.extend(r);
    out.extend(s);
    out
}

/// The key store: a directory of entries, one file `<name>.key` each, all wrapped by
/// the master key at `master_handle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStore {
    dir: PathBuf,
    master_handle: u32,
}

impl KeyStore {
    /// A store in `dir` (created on first [`KeyStore::generate`]) under the master key
    /// at `master_handle`.
    pub fn new(dir: impl Into<PathBuf>, master_handle: u32) -> Result<KeyStore, Error> {
        crate::seal::check_owner_handle("master key", master_handle)?;
        Ok(KeyStore {
            dir: dir.into(),
            master_handle,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> Result<PathBuf, Error> {
        check_key_name(name)?;
        Ok(self.dir.join(format!("{name}{SUFFIX}")))
    }

    /// Generates a fresh key pair in the TPM, wraps it under the master key and writes
    /// its entry atomically. [`Error::KeyExists`] when the name is taken.
    pub fn generate(&self, tpm: &mut impl KeyStoreTpm, name: &str) -> Result<KeyEntry, Error> {
        let path = self.path(name)?;
        if path.exists() {
            return Err(Error::KeyExists {
                name: name.to_owned(),
            });
        }
        let master_name = tpm
            .master_key_name(self.master_handle)?
            .ok_or(Error::KeyMissing {
                handle: self.master_handle,
            })?;
        let key = tpm.create_wrapped_key(self.master_handle)?;
        let entry = KeyEntry::new(name, self.master_handle, master_name, key)?;
        fs::create_dir_all(&self.dir).map_err(|e| Error::io("create directory", &self.dir, &e))?;
        fsutil::write_atomic(&path, &entry.to_bytes())?;
        Ok(entry)
    }

    /// The names of the entries, sorted (files that are not `<valid name>.key` are
    /// ignored; an absent directory is an empty store).
    pub fn list(&self) -> Result<Vec<String>, Error> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read directory", &self.dir, &e)),
        };
        let mut names = Vec::new();
        for item in rd {
            let item = item.map_err(|e| Error::io("read directory", &self.dir, &e))?;
            let file = item.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(SUFFIX)) else {
                continue;
            };
            if check_key_name(name).is_ok() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Reads and parses one entry, ready for [`KeyEntry::sign`].
    pub fn load(&self, name: &str) -> Result<KeyEntry, Error> {
        let path = self.path(name)?;
        let bytes = match fsutil::read_limited(&path, MAX_ENTRY as u64) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::KeyNotFound {
                    name: name.to_owned(),
                });
            }
            Err(e) => return Err(Error::io("read", &path, &e)),
        };
        let entry = KeyEntry::parse(&bytes)?;
        if entry.name != name {
            return Err(CORRUPT("entry name does not match its file name"));
        }
        Ok(entry)
    }

    /// Deletes an entry (the wrapped private key is gone for good).
    pub fn delete(&self, name: &str) -> Result<(), Error> {
        let path = self.path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io("fsync directory", &self.dir, &e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::KeyNotFound {
                name: name.to_owned(),
            }),
            Err(e) => Err(Error::io("remove", &path, &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A fake TPM: the "private blob" is tagged with the master's identity, and
    /// "signing" hashes the digest with it. Two seeds are two TPMs.
    struct FakeTpm {
        seed: u8,
        counter: u8,
        master: Option<u32>,
    }

    impl KeyStoreTpm for FakeTpm {
        fn master_key_name(&mut self, handle: u32) -> Result<Option<[u8; 32]>, Error> {
            Ok((self.master == Some(handle)).then_some([self.seed; 32]))
        }

        fn create_wrapped_key(&mut self, _master: u32) -> Result<WrappedKey, Error> {
            self.counter += 1;
            Ok(WrappedKey {
                tpm_public: vec![self.counter; 90],
                tpm_private: vec![self.seed; 126],
                spki_der: vec![self.counter; 91],
            })
        }

        fn sign_with_wrapped_key(
            &mut self,
            master: u32,
            key: &WrappedKey,
            digest: &[u8; 32],
        ) -> Result<[u8; 64], Error> {
            if key.tpm_private[0] != self.seed {
                return Err(Error::WrongTpm {
                    handle: master,
                    reason: "integrity",
                });
            }
            let mut out = [0u8; 64];
            out[..32].copy_from_slice(digest);
            out[32..].copy_from_slice(&Sha256::digest(&key.tpm_public));
            Ok(out)
        }
    }

    const MASTER: u32 = 0x8100_0101;

    fn tpm(seed: u8) -> FakeTpm {
        FakeTpm {
            seed,
            counter: 0,
            master: Some(MASTER),
        }
    }

    #[test]
    fn round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path().join("ks"), MASTER).unwrap();
        let mut t = tpm(1);
        let a = store.generate(&mut t, "a").unwrap();
        assert_eq!(store.load("a").unwrap(), a);
        assert_eq!(KeyEntry::parse(&a.to_bytes()).unwrap(), a);
        let sig = store.load("a").unwrap().sign(&mut t, b"hello").unwrap();
        assert_eq!(&sig[..32], Sha256::digest(b"hello").as_slice());
        // Stray files are not entries.
        fs::write(dir.path().join("ks/notes.txt"), b"x").unwrap();
        fs::write(dir.path().join("ks/.hidden.key"), b"x").unwrap();
        assert_eq!(store.list().unwrap(), ["a"]);
    }

    #[test]
    fn another_master_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), MASTER).unwrap();
        let entry = store.generate(&mut tpm(1), "a").unwrap();
        assert!(matches!(
            entry.sign(&mut tpm(2), b"m"),
            Err(Error::WrongTpm { .. })
        ));
        let mut none = tpm(1);
        none.master = None;
        assert_eq!(
            entry.sign(&mut none, b"m").unwrap_err(),
            Error::KeyMissing { handle: MASTER }
        );
        assert_eq!(
            store.generate(&mut none, "b").unwrap_err(),
            Error::KeyMissing { handle: MASTER }
        );
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", ".x", "a/b", "..", "a b", "ä", &"x".repeat(65)] {
            assert!(check_key_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "web-server_1.2", &"x".repeat(64)] {
            assert!(check_key_name(good).is_ok(), "{good:?}");
        }
        assert!(KeyStore::new("/tmp", 0x8101_0001).is_err());
    }

    #[test]
    fn parser_is_strict() {
        let entry = KeyEntry::new(
            "web",
            MASTER,
            [3; 32],
            WrappedKey {
                tpm_public: vec![1; 10],
                tpm_private: vec![2; 20],
                spki_der: vec![3; 30],
            },
        )
        .unwrap();
        let good = entry.to_bytes();
        let reason = |b: &[u8]| match KeyEntry::parse(b) {
            Err(Error::Corrupt { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        let resum = |b: &mut Vec<u8>| {
            let n = b.len() - 32;
            let s = Sha256::digest(&b[..n]);
            b[n..].copy_from_slice(&s);
        };
        assert_eq!(reason(&good[..good.len() - 1]), "checksum mismatch");
        for i in 5..good.len() {
            let mut b = good.clone();
            b[i] ^= 4;
            assert_eq!(reason(&b), "checksum mismatch", "byte {i}");
        }
        let mut b = good.clone();
        b[4] = 2;
        assert_eq!(reason(&b), "unknown version");
        let mut b = good.clone();
        b.splice(b.len() - 32..b.len() - 32, [0u8]);
        resum(&mut b);
        assert_eq!(reason(&b), "trailing bytes");
        let mut b = good.clone();
        b[6] = 1;
        resum(&mut b);
        assert_eq!(reason(&b), "reserved bytes not zero");
        let mut b = good.clone();
        b[44] = 0; // name length
        resum(&mut b);
        assert_eq!(reason(&b), "bad name");
        assert!(matches!(
            KeyEntry::new(
                "x",
                MASTER,
                [0; 32],
                WrappedKey {
                    tpm_public: vec![],
                    tpm_private: vec![1],
                    spki_der: vec![1]
                }
            ),
            Err(Error::UnexpectedAnswer { .. })
        ));
    }

    #[test]
    fn ecdsa_der_is_minimal() {
        let mut sig = [0u8; 64];
        sig[31] = 1;
        sig[32] = 0x80;
        let der = ecdsa_der(&sig);
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x01, 0x01]);
        assert_eq!(&der[5..8], &[0x02, 0x21, 0x00]);
        assert_eq!(der.len(), 0x28);
    }

    proptest! {
        #[test]
        fn any_bytes_give_an_error_or_a_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(e) = KeyEntry::parse(&bytes) {
                prop_assert_eq!(e.to_bytes(), bytes);
            }
        }
    }
}
