//! An in-memory stand-in for a TPM, for the unit tests of the pure sealing logic.
//! "Encryption" is a keyed XOR with a tag: enough to tell keys apart, not crypto.

use std::collections::HashMap;

use sha2::{Digest as _, Sha256};

use crate::{Error, Fek, FileMac, KeyInfo, PcrSelection, Tpm};

#[derive(Debug)]
struct FakeKey {
    secret: [u8; 32],
    pcrs: PcrSelection,
    /// Put there by someone else: a public area unlike ours (`Some(why)`).
    foreign: Option<&'static str>,
    /// An authorisation value (invisible in the public area): decryption fails.
    password: bool,
    /// An HMAC key (not an RSA sealing key).
    mac: bool,
}

/// A fake TPM: persistent keys in a map, a deterministic "random" stream.
#[derive(Debug)]
pub(crate) struct FakeTpm {
    seed: u8,
    counter: u8,
    keys: HashMap<u32, FakeKey>,
    /// PCR values changed since the keys were created.
    pub(crate) pcrs_changed: bool,
    pub(crate) locked_out: bool,
    pub(crate) calls: Vec<&'static str>,
}

impl FakeTpm {
    /// A TPM whose keys derive from `seed` (two seeds = two different TPMs).
    pub(crate) fn new(seed: u8) -> FakeTpm {
        FakeTpm {
            seed,
            counter: 0,
            keys: HashMap::new(),
            pcrs_changed: false,
            locked_out: false,
            calls: Vec::new(),
        }
    }

    /// Puts a key this crate did not make at `handle`: with a public area unlike ours
    /// (`foreign`), or like ours but with a password.
    pub(crate) fn plant(&mut self, handle: u32, foreign: Option<&'static str>, password: bool) {
        self.keys.insert(
            handle,
            FakeKey {
                secret: [0x5a; 32],
                pcrs: PcrSelection::NONE,
                foreign,
                password,
                mac: false,
            },
        );
    }

    fn key(&self, handle: u32) -> Result<&FakeKey, Error> {
        if self.locked_out {
            return Err(Error::LockedOut);
        }
        self.keys.get(&handle).ok_or(Error::KeyMissing { handle })
    }

    fn name(key: &FakeKey) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(key.secret);
        h.update(key.pcrs.mask().to_be_bytes());
        h.finalize().into()
    }

    fn tag(secret: &[u8; 32], fek: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(secret);
        h.update(fek);
        h.finalize().into()
    }
}

impl Tpm for FakeTpm {
    fn fek_key_name(&mut self, handle: u32) -> Result<Option<[u8; 32]>, Error> {
        self.calls.push("name");
        if self.locked_out {
            return Err(Error::LockedOut);
        }
        Ok(self.keys.get(&handle).map(FakeTpm::name))
    }

    fn read_fek_key(&mut self, handle: u32) -> Result<Option<KeyInfo>, Error> {
        self.calls.push("read");
        Ok(self.keys.get(&handle).map(|k| KeyInfo {
            name_digest: FakeTpm::name(k),
            policy_bound: !k.pcrs.is_empty(),
        }))
    }

    fn our_fek_key(&mut self, handle: u32, pcrs: PcrSelection) -> Result<Option<KeyInfo>, Error> {
        self.calls.push("ours");
        let Some(key) = self.keys.get(&handle) else {
            return Ok(None);
        };
        if let Some(why) = key.foreign.or(key.mac.then_some("it is an HMAC key")) {
            return Err(Error::ForeignKey {
                handle,
                reason: why.into(),
            });
        }
        if key.pcrs != pcrs {
            return Err(Error::ForeignKey {
                handle,
                reason: "its auth policy differs".into(),
            });
        }
        self.read_fek_key(handle)
    }

    fn create_fek_key(&mut self, handle: u32, pcrs: PcrSelection) -> Result<KeyInfo, Error> {
        self.calls.push("create");
        let mut secret = [self.seed; 32];
        secret[0] ^= handle as u8;
        self.keys.insert(
            handle,
            FakeKey {
                secret,
                pcrs,
                foreign: None,
                password: false,
                mac: false,
            },
        );
        self.read_fek_key(handle)?
            .ok_or(Error::KeyMissing { handle })
    }

    fn our_mac_key(&mut self, handle: u32, pcrs: PcrSelection) -> Result<Option<KeyInfo>, Error> {
        self.calls.push("ours-mac");
        let Some(key) = self.keys.get(&handle) else {
            return Ok(None);
        };
        if !key.mac || key.pcrs != pcrs {
            return Err(Error::ForeignKey {
                handle,
                reason: "not our HMAC key".into(),
            });
        }
        self.read_fek_key(handle)
    }

    fn create_mac_key(&mut self, handle: u32, pcrs: PcrSelection) -> Result<KeyInfo, Error> {
        self.calls.push("create-mac");
        let mut secret = [self.seed ^ 0x77; 32];
        secret[0] ^= handle as u8;
        self.keys.insert(
            handle,
            FakeKey {
                secret,
                pcrs,
                foreign: None,
                password: false,
                mac: true,
            },
        );
        self.read_fek_key(handle)?
            .ok_or(Error::KeyMissing { handle })
    }

    fn hmac(
        &mut self,
        salt_key: u32,
        mac_handle: u32,
        pcrs: PcrSelection,
        data: &[u8],
    ) -> Result<[u8; 32], Error> {
        self.calls.push("hmac");
        let changed = self.pcrs_changed;
        self.key(salt_key)?;
        let key = self.key(mac_handle)?;
        if !key.mac {
            return Err(Error::Tpm {
                op: "HMAC",
                reason: "not an HMAC key".into(),
            });
        }
        if !key.pcrs.is_empty() && (changed || pcrs != key.pcrs) {
            return Err(Error::PcrMismatch { handle: mac_handle });
        }
        Ok(FakeTpm::tag(&key.secret, data))
    }

    fn rsa_decrypt_fek_authenticated(
        &mut self,
        handle: u32,
        mac: &FileMac,
        pcrs: PcrSelection,
        data: &[u8],
        ciphertext: &[u8],
    ) -> Result<Fek, Error> {
        let tag = self.hmac(handle, mac.key_handle, pcrs, data)?;
        if tag != mac.tag {
            return Err(Error::NotAuthentic {
                handle: mac.key_handle,
            });
        }
        self.rsa_decrypt_fek(handle, pcrs, ciphertext)
    }

    fn random_fek(&mut self, salt_key: u32) -> Result<Fek, Error> {
        self.calls.push("random");
        self.key(salt_key)?;
        self.counter = self.counter.wrapping_add(1);
        let bytes: [u8; 32] = core::array::from_fn(|i| (i as u8) ^ self.counter ^ 0xa5);
        Fek::from_slice(&bytes)
    }

    fn rsa_encrypt_fek(&mut self, handle: u32, fek: &Fek) -> Result<Vec<u8>, Error> {
        self.calls.push("encrypt");
        let key = self.key(handle)?;
        let mut ct = vec![0u8; 256];
        for (i, b) in fek.secret_bytes().iter().enumerate() {
            ct[i] = b ^ key.secret[i];
        }
        ct[32..64].copy_from_slice(&FakeTpm::tag(&key.secret, fek.secret_bytes()));
        Ok(ct)
    }

    fn rsa_decrypt_fek(
        &mut self,
        handle: u32,
        pcrs: PcrSelection,
        ciphertext: &[u8],
    ) -> Result<Fek, Error> {
        self.calls.push("decrypt");
        let changed = self.pcrs_changed;
        let key = self.key(handle)?;
        if key.password {
            return Err(Error::Tpm {
                op: "RSA_Decrypt",
                reason: "authorization failure".into(),
            });
        }
        if !key.pcrs.is_empty() && (changed || pcrs != key.pcrs) {
            return Err(Error::PcrMismatch { handle });
        }
        let clear: Vec<u8> = (0..32).map(|i| ciphertext[i] ^ key.secret[i]).collect();
        if FakeTpm::tag(&key.secret, &clear)[..] != ciphertext[32..64] {
            return Err(Error::WrongTpm {
                handle,
                reason: "the TPM cannot decrypt this blob",
            });
        }
        Fek::from_slice(&clear)
    }
}
