//! The v2 encryption policy (24 bytes, `struct fscrypt_policy_v2`) and the v2 on-disk
//! context (40 bytes, `struct fscrypt_context_v2`): policy image plus the file's nonce.

use core::fmt;

use crate::error::{Error, Result};
use crate::key::{KEY_IDENTIFIER_SIZE, KeyIdentifier, NONCE_SIZE};

/// Size of an encoded [`PolicyV2`].
pub const POLICY_V2_SIZE: usize = 24;
/// Size of an encoded [`ContextV2`].
pub const CONTEXT_V2_SIZE: usize = 40;
/// `FSCRYPT_POLICY_V2` / `FSCRYPT_CONTEXT_V2`: the version byte of both structures.
pub const VERSION_V2: u8 = 2;

const FLAG_PAD_MASK: u8 = 0x03;
const FLAG_DIRECT_KEY: u8 = 0x04;
const FLAG_IV_INO_LBLK_64: u8 = 0x08;
const FLAG_IV_INO_LBLK_32: u8 = 0x10;
const FLAGS_KNOWN: u8 = FLAG_PAD_MASK | FLAG_DIRECT_KEY | FLAG_IV_INO_LBLK_64 | FLAG_IV_INO_LBLK_32;

/// The fscrypt encryption modes (`FSCRYPT_MODE_*` of `linux/fscrypt.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum EncryptionMode {
    /// AES-256-XTS, for contents (64-byte key). Implemented here.
    Aes256Xts = 1,
    /// AES-256-CBC-CTS (CS3), for filenames (32-byte key). Implemented here.
    Aes256Cts = 4,
    /// AES-128-CBC-ESSIV, for contents.
    Aes128Cbc = 5,
    /// AES-128-CBC-CTS, for filenames.
    Aes128Cts = 6,
    /// SM4-XTS, for contents.
    Sm4Xts = 7,
    /// SM4-CBC-CTS, for filenames.
    Sm4Cts = 8,
    /// Adiantum, for both.
    Adiantum = 9,
    /// AES-256-HCTR2, for filenames.
    Aes256Hctr2 = 10,
}

impl EncryptionMode {
    /// Parses a mode number.
    pub fn from_number(n: u8) -> Result<EncryptionMode> {
        Ok(match n {
            1 => EncryptionMode::Aes256Xts,
            4 => EncryptionMode::Aes256Cts,
            5 => EncryptionMode::Aes128Cbc,
            6 => EncryptionMode::Aes128Cts,
            7 => EncryptionMode::Sm4Xts,
            8 => EncryptionMode::Sm4Cts,
            9 => EncryptionMode::Adiantum,
            10 => EncryptionMode::Aes256Hctr2,
            _ => return Err(Error::UnknownMode(n)),
        })
    }

    /// The mode number.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// Size of the derived key the kernel uses with this mode.
    pub fn key_size(self) -> usize {
        match self {
            EncryptionMode::Aes256Xts => 64,
            EncryptionMode::Aes256Cts => 32,
            EncryptionMode::Aes128Cbc => 16,
            EncryptionMode::Aes128Cts => 16,
            EncryptionMode::Sm4Xts => 32,
            EncryptionMode::Sm4Cts => 16,
            EncryptionMode::Adiantum => 32,
            EncryptionMode::Aes256Hctr2 => 32,
        }
    }

    /// The kernel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            EncryptionMode::Aes256Xts => "AES-256-XTS",
            EncryptionMode::Aes256Cts => "AES-256-CBC-CTS",
            EncryptionMode::Aes128Cbc => "AES-128-CBC-ESSIV",
            EncryptionMode::Aes128Cts => "AES-128-CBC-CTS",
            EncryptionMode::Sm4Xts => "SM4-XTS",
            EncryptionMode::Sm4Cts => "SM4-CBC-CTS",
            EncryptionMode::Adiantum => "Adiantum",
            EncryptionMode::Aes256Hctr2 => "AES-256-HCTR2",
        }
    }
}

impl fmt::Display for EncryptionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The mode pairs the kernel accepts for v2 policies (`fscrypt_valid_enc_modes_v2`).
fn valid_mode_pair(contents: EncryptionMode, filenames: EncryptionMode) -> bool {
    use EncryptionMode::*;
    matches!(
        (contents, filenames),
        (Aes256Xts, Aes256Cts)
            | (Aes256Xts, Aes256Hctr2)
            | (Aes128Cbc, Aes128Cts)
            | (Adiantum, Adiantum)
            | (Sm4Xts, Sm4Cts)
    )
}

/// Filename padding (`FSCRYPT_POLICY_FLAGS_PAD_*`): names are NUL-padded to a multiple of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Padding {
    /// 4 bytes.
    Pad4,
    /// 8 bytes.
    Pad8,
    /// 16 bytes.
    Pad16,
    /// 32 bytes (the `fscrypt` tool's default, and the best at hiding name lengths).
    Pad32,
}

impl Padding {
    /// Padding in bytes.
    pub fn bytes(self) -> usize {
        4 << self.bits()
    }

    /// From a size in bytes (4, 8, 16 or 32).
    pub fn from_bytes(n: usize) -> Option<Padding> {
        Some(match n {
            4 => Padding::Pad4,
            8 => Padding::Pad8,
            16 => Padding::Pad16,
            32 => Padding::Pad32,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Padding::Pad4 => 0,
            Padding::Pad8 => 1,
            Padding::Pad16 => 2,
            Padding::Pad32 => 3,
        }
    }

    fn from_bits(b: u8) -> Padding {
        match b & FLAG_PAD_MASK {
            0 => Padding::Pad4,
            1 => Padding::Pad8,
            2 => Padding::Pad16,
            _ => Padding::Pad32,
        }
    }
}

/// How IVs and keys are formed: the mutually exclusive policy flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IvMode {
    /// Per-file keys derived from the nonce; IV = data unit index (the default).
    #[default]
    PerFileKey,
    /// `DIRECT_KEY`: one key per mode; the nonce goes into the IV (Adiantum/HCTR2 only).
    DirectKey,
    /// `IV_INO_LBLK_64`: one key per mode and file system; IV = inode << 32 | index.
    IvInoLblk64,
    /// `IV_INO_LBLK_32`: one key per mode and file system; IV = hash(inode) + index (32 bits).
    IvInoLblk32,
}

impl IvMode {
    fn bits(self) -> u8 {
        match self {
            IvMode::PerFileKey => 0,
            IvMode::DirectKey => FLAG_DIRECT_KEY,
            IvMode::IvInoLblk64 => FLAG_IV_INO_LBLK_64,
            IvMode::IvInoLblk32 => FLAG_IV_INO_LBLK_32,
        }
    }
}

/// A v2 encryption policy: what `FS_IOC_SET_ENCRYPTION_POLICY` takes and
/// `FS_IOC_GET_ENCRYPTION_POLICY_EX` returns.
///
/// Every value of this type is one the kernel's `fscrypt_supported_v2_policy`
/// checks would not reject on format grounds (mode pair, flags, reserved bytes).
///
/// ```
/// use ssr_fscrypt::{KeyIdentifier, Padding, PolicyV2};
/// let policy = PolicyV2::new(KeyIdentifier([0x11; 16])).with_padding(Padding::Pad16);
/// let bytes = policy.to_bytes();
/// assert_eq!(bytes[..4], [2, 1, 4, 0x02]);
/// assert_eq!(PolicyV2::parse(&bytes)?, policy);
/// # Ok::<(), ssr_fscrypt::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyV2 {
    contents_mode: EncryptionMode,
    filenames_mode: EncryptionMode,
    padding: Padding,
    iv_mode: IvMode,
    log2_data_unit_size: u8,
    key_identifier: KeyIdentifier,
}

impl PolicyV2 {
    /// AES-256-XTS contents, AES-256-CBC-CTS filenames, 32-byte name padding, per-file
    /// keys, data unit = file system block: the policy of SPEC 1.3.
    pub fn new(key_identifier: KeyIdentifier) -> PolicyV2 {
        PolicyV2 {
            contents_mode: EncryptionMode::Aes256Xts,
            filenames_mode: EncryptionMode::Aes256Cts,
            padding: Padding::Pad32,
            iv_mode: IvMode::PerFileKey,
            log2_data_unit_size: 0,
            key_identifier,
        }
    }

    /// With another filename padding.
    pub fn with_padding(mut self, padding: Padding) -> PolicyV2 {
        self.padding = padding;
        self
    }

    /// With other modes; the pair must be one the kernel accepts for v2.
    pub fn with_modes(
        mut self,
        contents: EncryptionMode,
        filenames: EncryptionMode,
    ) -> Result<PolicyV2> {
        self.contents_mode = contents;
        self.filenames_mode = filenames;
        self.check()?;
        Ok(self)
    }

    /// With another IV/key flag.
    pub fn with_iv_mode(mut self, iv_mode: IvMode) -> Result<PolicyV2> {
        self.iv_mode = iv_mode;
        self.check()?;
        Ok(self)
    }

    /// With an explicit data unit size (`log2`, 9..=16), or 0 for the file system
    /// block size.
    pub fn with_log2_data_unit_size(mut self, log2: u8) -> Result<PolicyV2> {
        self.log2_data_unit_size = log2;
        self.check()?;
        Ok(self)
    }

    /// Contents mode.
    pub fn contents_mode(&self) -> EncryptionMode {
        self.contents_mode
    }
    /// Filenames mode.
    pub fn filenames_mode(&self) -> EncryptionMode {
        self.filenames_mode
    }
    /// Filename padding.
    pub fn padding(&self) -> Padding {
        self.padding
    }
    /// IV/key flag.
    pub fn iv_mode(&self) -> IvMode {
        self.iv_mode
    }
    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.padding.bits() | self.iv_mode.bits()
    }
    /// `log2_data_unit_size` (0: the file system block size).
    pub fn log2_data_unit_size(&self) -> u8 {
        self.log2_data_unit_size
    }
    /// Data unit size in bytes, given the file system block size.
    pub fn data_unit_size(&self, fs_block_size: usize) -> usize {
        if self.log2_data_unit_size == 0 {
            fs_block_size
        } else {
            1usize << self.log2_data_unit_size
        }
    }
    /// The master key identifier.
    pub fn key_identifier(&self) -> KeyIdentifier {
        self.key_identifier
    }

    fn check(&self) -> Result<()> {
        if !valid_mode_pair(self.contents_mode, self.filenames_mode) {
            return Err(Error::InvalidModePair {
                contents: self.contents_mode.number(),
                filenames: self.filenames_mode.number(),
            });
        }
        if self.log2_data_unit_size != 0 && !(9..=16).contains(&self.log2_data_unit_size) {
            return Err(Error::InvalidDataUnitSize(self.log2_data_unit_size));
        }
        if self.log2_data_unit_size != 0 && self.iv_mode == IvMode::IvInoLblk32 {
            return Err(Error::InvalidFlags {
                flags: self.flags(),
                reason: "IV_INO_LBLK_32 cannot be combined with log2_data_unit_size",
            });
        }
        Ok(())
    }

    /// Strict parser of the 24-byte `struct fscrypt_policy_v2`.
    pub fn parse(bytes: &[u8]) -> Result<PolicyV2> {
        let bytes: &[u8; POLICY_V2_SIZE] = bytes.try_into().map_err(|_| Error::Length {
            what: "fscrypt v2 policy",
            expected: POLICY_V2_SIZE,
            got: bytes.len(),
        })?;
        Self::parse_fields(bytes, "fscrypt v2 policy")
    }

    fn parse_fields(bytes: &[u8; POLICY_V2_SIZE], what: &'static str) -> Result<PolicyV2> {
        let [
            version,
            contents,
            filenames,
            flags,
            log2_du,
            r0,
            r1,
            r2,
            id @ ..,
        ] = *bytes;
        if version != VERSION_V2 {
            return Err(Error::UnsupportedVersion { what, version });
        }
        let contents_mode = EncryptionMode::from_number(contents)?;
        let filenames_mode = EncryptionMode::from_number(filenames)?;
        if flags & !FLAGS_KNOWN != 0 {
            return Err(Error::InvalidFlags {
                flags,
                reason: "unknown flag bits",
            });
        }
        let iv_mode = match flags & !FLAG_PAD_MASK {
            0 => IvMode::PerFileKey,
            FLAG_DIRECT_KEY => IvMode::DirectKey,
            FLAG_IV_INO_LBLK_64 => IvMode::IvInoLblk64,
            FLAG_IV_INO_LBLK_32 => IvMode::IvInoLblk32,
            _ => {
                return Err(Error::InvalidFlags {
                    flags,
                    reason: "DIRECT_KEY, IV_INO_LBLK_64 and IV_INO_LBLK_32 are mutually exclusive",
                });
            }
        };
        if [r0, r1, r2] != [0; 3] {
            return Err(Error::ReservedNotZero { what });
        }
        let policy = PolicyV2 {
            contents_mode,
            filenames_mode,
            padding: Padding::from_bits(flags),
            iv_mode,
            log2_data_unit_size: log2_du,
            key_identifier: KeyIdentifier(id),
        };
        policy.check()?;
        Ok(policy)
    }

    /// The 24-byte `struct fscrypt_policy_v2`.
    pub fn to_bytes(&self) -> [u8; POLICY_V2_SIZE] {
        let mut out = [0u8; POLICY_V2_SIZE];
        out[0] = VERSION_V2;
        out[1] = self.contents_mode.number();
        out[2] = self.filenames_mode.number();
        out[3] = self.flags();
        out[4] = self.log2_data_unit_size;
        out[8..8 + KEY_IDENTIFIER_SIZE].copy_from_slice(&self.key_identifier.0);
        out
    }
}

/// The v2 encryption context stored with every encrypted inode (ext4: the xattr
/// `c` in index 9): the policy's fields plus the inode's 16-byte nonce.
///
/// ```
/// use ssr_fscrypt::{ContextV2, KeyIdentifier, PolicyV2};
/// let ctx = ContextV2::new(PolicyV2::new(KeyIdentifier([3; 16])), [9; 16]);
/// assert_eq!(ContextV2::parse(&ctx.to_bytes())?, ctx);
/// assert!(ContextV2::parse(&ctx.to_bytes()[..39]).is_err());
/// # Ok::<(), ssr_fscrypt::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContextV2 {
    policy: PolicyV2,
    nonce: [u8; NONCE_SIZE],
}

impl ContextV2 {
    /// A context from a policy and a nonce.
    pub fn new(policy: PolicyV2, nonce: [u8; NONCE_SIZE]) -> ContextV2 {
        ContextV2 { policy, nonce }
    }

    /// The policy part.
    pub fn policy(&self) -> &PolicyV2 {
        &self.policy
    }

    /// The file's nonce.
    pub fn nonce(&self) -> &[u8; NONCE_SIZE] {
        &self.nonce
    }

    /// Strict parser of the 40-byte `struct fscrypt_context_v2`.
    pub fn parse(bytes: &[u8]) -> Result<ContextV2> {
        let what = "fscrypt v2 context";
        if bytes.len() != CONTEXT_V2_SIZE {
            return Err(Error::Length {
                what,
                expected: CONTEXT_V2_SIZE,
                got: bytes.len(),
            });
        }
        let (head, nonce) = bytes.split_at(POLICY_V2_SIZE);
        let head: &[u8; POLICY_V2_SIZE] = head.try_into().map_err(|_| Error::Length {
            what,
            expected: CONTEXT_V2_SIZE,
            got: bytes.len(),
        })?;
        let policy = PolicyV2::parse_fields(head, what)?;
        let nonce: [u8; NONCE_SIZE] = nonce.try_into().map_err(|_| Error::Length {
            what,
            expected: CONTEXT_V2_SIZE,
            got: bytes.len(),
        })?;
        Ok(ContextV2 { policy, nonce })
    }

    /// The 40-byte `struct fscrypt_context_v2`.
    pub fn to_bytes(&self) -> [u8; CONTEXT_V2_SIZE] {
        let mut out = [0u8; CONTEXT_V2_SIZE];
        out[..POLICY_V2_SIZE].copy_from_slice(&self.policy.to_bytes());
        out[POLICY_V2_SIZE..].copy_from_slice(&self.nonce);
        out
    }
}
