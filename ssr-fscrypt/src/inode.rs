//! One encrypted inode's ciphers, derived from the master key and its on-disk
//! context exactly as `fscrypt_setup_v2_file_key` does.

use crate::contents::ContentsCipher;
use crate::error::{Error, Result};
use crate::fname::{FilenameCipher, MAX_NAME_LEN};
use crate::key::MasterKey;
use crate::policy::{ContextV2, EncryptionMode, IvMode};

/// What the IV forms need to know about the inode and its file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeInfo {
    /// Inode number (used by the IV_INO_LBLK_* policies).
    pub ino: u64,
    /// File system UUID (`s_uuid`; used by the IV_INO_LBLK_* policies).
    pub fs_uuid: [u8; 16],
    /// File system block size (the data unit size unless the policy sets one).
    pub fs_block_size: usize,
}

impl InodeInfo {
    /// Info for a default (per-file key) policy, where only the block size matters.
    pub fn with_block_size(fs_block_size: usize) -> InodeInfo {
        InodeInfo {
            ino: 0,
            fs_uuid: [0; 16],
            fs_block_size,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum IvBase {
    Index,
    InoLblk64(u32),
    InoLblk32(u32),
}

/// The contents and filename ciphers of one inode, with its IV form and data unit size.
///
/// ```
/// use ssr_fscrypt::{ContextV2, InodeCipher, InodeInfo, MasterKey, Padding, PolicyV2};
/// let key = MasterKey::from_bytes(&[1u8; 32])?;
/// let policy = PolicyV2::new(key.identifier()).with_padding(Padding::Pad16);
/// let file = InodeCipher::new(&key, &ContextV2::new(policy, [5u8; 16]), InodeInfo::with_block_size(4096))?;
/// let name = file.encrypt_name(b"config.json")?;
/// assert_eq!(name.len(), 16);
/// assert_eq!(file.decrypt_name(&name)?, b"config.json");
/// let mut block = vec![0u8; 4096];
/// file.encrypt_contents(0, &mut block)?;
/// file.decrypt_contents(0, &mut block)?;
/// assert!(block.iter().all(|b| *b == 0));
/// # Ok::<(), ssr_fscrypt::Error>(())
/// ```
#[derive(Debug)]
pub struct InodeCipher {
    contents: ContentsCipher,
    filenames: FilenameCipher,
    context: ContextV2,
    iv_base: IvBase,
    data_unit_size: usize,
}

impl InodeCipher {
    /// Derives the inode's keys. Fails when `master` is not the policy's key, or the
    /// policy uses modes or flags not implemented here (only AES-256-XTS +
    /// AES-256-CTS; DIRECT_KEY needs Adiantum/HCTR2).
    pub fn new(master: &MasterKey, context: &ContextV2, info: InodeInfo) -> Result<InodeCipher> {
        let policy = context.policy();
        let id = master.identifier();
        if id != policy.key_identifier() {
            return Err(Error::WrongKey {
                expected: policy.key_identifier(),
                actual: id,
            });
        }
        if policy.contents_mode() != EncryptionMode::Aes256Xts
            || policy.filenames_mode() != EncryptionMode::Aes256Cts
        {
            return Err(Error::Unsupported {
                what: "modes other than AES-256-XTS contents + AES-256-CTS filenames",
            });
        }
        let data_unit_size = policy.data_unit_size(info.fs_block_size);
        if !data_unit_size.is_power_of_two() || !(512..=65536).contains(&data_unit_size) {
            return Err(Error::DataUnitLength {
                len: info.fs_block_size,
                data_unit_size,
            });
        }
        let contents_mode = policy.contents_mode();
        let filenames_mode = policy.filenames_mode();
        let (ck, fk, iv_base) = match policy.iv_mode() {
            IvMode::PerFileKey => (
                master.derive_file_key(context.nonce(), contents_mode),
                master.derive_file_key(context.nonce(), filenames_mode),
                IvBase::Index,
            ),
            IvMode::DirectKey => {
                return Err(Error::Unsupported {
                    what: "DIRECT_KEY (requires Adiantum or HCTR2)",
                });
            }
            IvMode::IvInoLblk64 => {
                let ino = u32::try_from(info.ino).map_err(|_| Error::IvOverflow {
                    what: "inode number",
                    value: info.ino,
                })?;
                (
                    master.derive_iv_ino_lblk_64_key(contents_mode, &info.fs_uuid),
                    master.derive_iv_ino_lblk_64_key(filenames_mode, &info.fs_uuid),
                    IvBase::InoLblk64(ino),
                )
            }
            IvMode::IvInoLblk32 => {
                let hashed = master.derive_inode_hash_key().hash_u64(info.ino) as u32;
                (
                    master.derive_iv_ino_lblk_32_key(contents_mode, &info.fs_uuid),
                    master.derive_iv_ino_lblk_32_key(filenames_mode, &info.fs_uuid),
                    IvBase::InoLblk32(hashed),
                )
            }
        };
        Ok(InodeCipher {
            contents: ContentsCipher::new(&ck)?,
            filenames: FilenameCipher::new(&fk)?,
            context: *context,
            iv_base,
            data_unit_size,
        })
    }

    /// The inode's context.
    pub fn context(&self) -> &ContextV2 {
        &self.context
    }

    /// The data unit size in bytes.
    pub fn data_unit_size(&self) -> usize {
        self.data_unit_size
    }

    /// The IV of data unit `index` (the kernel's `fscrypt_generate_iv`).
    pub fn iv(&self, index: u64) -> Result<[u8; 16]> {
        let dun = match self.iv_base {
            IvBase::Index => index,
            IvBase::InoLblk64(ino) => {
                let lblk = u32::try_from(index).map_err(|_| Error::IvOverflow {
                    what: "data unit index",
                    value: index,
                })?;
                (u64::from(ino) << 32) | u64::from(lblk)
            }
            IvBase::InoLblk32(hashed) => {
                let lblk = u32::try_from(index).map_err(|_| Error::IvOverflow {
                    what: "data unit index",
                    value: index,
                })?;
                u64::from(hashed.wrapping_add(lblk))
            }
        };
        Ok(crate::contents::index_iv(dun))
    }

    /// Encrypts whole data units in place; `buf` starts at data unit `first_index`.
    pub fn encrypt_contents(&self, first_index: u64, buf: &mut [u8]) -> Result<()> {
        self.contents_op(first_index, buf, true)
    }

    /// Decrypts whole data units in place; `buf` starts at data unit `first_index`.
    pub fn decrypt_contents(&self, first_index: u64, buf: &mut [u8]) -> Result<()> {
        self.contents_op(first_index, buf, false)
    }

    fn contents_op(&self, first_index: u64, buf: &mut [u8], encrypt: bool) -> Result<()> {
        let du = self.data_unit_size;
        if !buf.len().is_multiple_of(du) {
            return Err(Error::DataUnitLength {
                len: buf.len(),
                data_unit_size: du,
            });
        }
        self.contents.crypt_data_units(buf, du, encrypt, |i| {
            let index = first_index.checked_add(i as u64).ok_or(Error::IvOverflow {
                what: "data unit index",
                value: first_index,
            })?;
            self.iv(index)
        })
    }

    /// Encrypts a name as it is stored in this directory (max 255 bytes).
    pub fn encrypt_name(&self, name: &[u8]) -> Result<Vec<u8>> {
        let iv = self.iv(0)?;
        self.filenames
            .encrypt_name(&iv, name, self.context.policy().padding(), MAX_NAME_LEN)
    }

    /// Decrypts a name stored in this directory.
    pub fn decrypt_name(&self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let iv = self.iv(0)?;
        self.filenames.decrypt_name(&iv, ciphertext)
    }
}
