//! The fscrypt ioctls (Linux, feature `kernel`): set and get a v2 policy, add, remove
//! and query a master key, read a file's nonce.
//!
//! The key ioctls act on the file system: any path on it serves. The structures are
//! built as byte buffers with the kernel's layout (`include/uapi/linux/fscrypt.h`),
//! and the ioctl numbers are hard-coded because they encode historical sizes.
//! Buffers that carry key material are zeroized after use.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::key::{KeyIdentifier, MAX_MASTER_KEY_SIZE, MasterKey, NONCE_SIZE};
use crate::policy::{POLICY_V2_SIZE, PolicyV2};

/// `FS_IOC_SET_ENCRYPTION_POLICY` (`_IOR('f', 19, struct fscrypt_policy_v1)`).
pub const FS_IOC_SET_ENCRYPTION_POLICY: u32 = 0x800C_6613;
/// `FS_IOC_GET_ENCRYPTION_POLICY_EX` (`_IOWR('f', 22, __u8[9])`).
pub const FS_IOC_GET_ENCRYPTION_POLICY_EX: u32 = 0xC009_6616;
/// `FS_IOC_ADD_ENCRYPTION_KEY` (`_IOWR('f', 23, struct fscrypt_add_key_arg)`).
pub const FS_IOC_ADD_ENCRYPTION_KEY: u32 = 0xC050_6617;
/// `FS_IOC_REMOVE_ENCRYPTION_KEY` (`_IOWR('f', 24, struct fscrypt_remove_key_arg)`).
pub const FS_IOC_REMOVE_ENCRYPTION_KEY: u32 = 0xC040_6618;
/// `FS_IOC_GET_ENCRYPTION_KEY_STATUS` (`_IOWR('f', 26, struct fscrypt_get_key_status_arg)`).
pub const FS_IOC_GET_ENCRYPTION_KEY_STATUS: u32 = 0xC080_661A;
/// `FS_IOC_GET_ENCRYPTION_NONCE` (`_IOR('f', 27, __u8[16])`).
pub const FS_IOC_GET_ENCRYPTION_NONCE: u32 = 0x8010_661B;

const KEY_SPEC_TYPE_IDENTIFIER: u32 = 2;
const KEY_SPEC_SIZE: usize = 40;
const ADD_KEY_HEADER: usize = 80;
const REMOVE_KEY_SIZE: usize = 64;
const KEY_STATUS_SIZE: usize = 128;
const REMOVAL_STATUS_FLAG_FILES_BUSY: u32 = 0x1;
const REMOVAL_STATUS_FLAG_OTHER_USERS: u32 = 0x2;
const KEY_STATUS_ABSENT: u32 = 1;
const KEY_STATUS_PRESENT: u32 = 2;
const KEY_STATUS_INCOMPLETELY_REMOVED: u32 = 3;
const KEY_STATUS_FLAG_ADDED_BY_SELF: u32 = 0x1;

/// What `FS_IOC_REMOVE_ENCRYPTION_KEY` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoveOutcome {
    /// The key is gone and every file under it is locked.
    Removed,
    /// The key secret is wiped, but some files are still in use and stay unlocked
    /// until closed (`FILES_BUSY`); removing again later finishes the job.
    FilesBusy,
    /// Only this user's claim was removed; other users still hold the key.
    OtherUsers,
}

/// What `FS_IOC_GET_ENCRYPTION_KEY_STATUS` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyStatus {
    /// Not added to this file system.
    Absent,
    /// Added and usable.
    Present {
        /// The calling user added it.
        added_by_self: bool,
        /// How many users have added it.
        user_count: u32,
    },
    /// Removed, but files still in use keep it partly alive.
    IncompletelyRemoved,
}

/// Adds a raw master key to the file system holding `fs_path` and returns its
/// identifier as the kernel computed it.
pub fn add_key(fs_path: &Path, key: &MasterKey) -> Result<KeyIdentifier> {
    let file = open(fs_path)?;
    let raw = key.secret_bytes();
    let mut buf = Zeroizing::new([0u8; ADD_KEY_HEADER + MAX_MASTER_KEY_SIZE]);
    put_u32(&mut buf[..], 0, KEY_SPEC_TYPE_IDENTIFIER);
    // raw_size (u32 at 40); key_id (u32 at 44) stays 0: the raw key follows the header.
    put_u32(&mut buf[..], 40, raw.len() as u32);
    buf[ADD_KEY_HEADER..ADD_KEY_HEADER + raw.len()].copy_from_slice(raw);
    ioctl(
        &file,
        fs_path,
        "FS_IOC_ADD_ENCRYPTION_KEY",
        FS_IOC_ADD_ENCRYPTION_KEY,
        &mut buf[..],
    )?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&buf[8..24]);
    Ok(KeyIdentifier(id))
}

/// Removes (this user's claim to) a key from the file system holding `fs_path`.
/// A key that is not present gives [`Error::Kernel`] with `ENOKEY`.
pub fn remove_key(fs_path: &Path, id: &KeyIdentifier) -> Result<RemoveOutcome> {
    let file = open(fs_path)?;
    let mut buf = [0u8; REMOVE_KEY_SIZE];
    put_key_spec(&mut buf, id);
    ioctl(
        &file,
        fs_path,
        "FS_IOC_REMOVE_ENCRYPTION_KEY",
        FS_IOC_REMOVE_ENCRYPTION_KEY,
        &mut buf,
    )?;
    let flags = get_u32(&buf, KEY_SPEC_SIZE);
    Ok(if flags & REMOVAL_STATUS_FLAG_OTHER_USERS != 0 {
        RemoveOutcome::OtherUsers
    } else if flags & REMOVAL_STATUS_FLAG_FILES_BUSY != 0 {
        RemoveOutcome::FilesBusy
    } else {
        RemoveOutcome::Removed
    })
}

/// The status of a key on the file system holding `fs_path`.
pub fn key_status(fs_path: &Path, id: &KeyIdentifier) -> Result<KeyStatus> {
    let file = open(fs_path)?;
    let mut buf = [0u8; KEY_STATUS_SIZE];
    put_key_spec(&mut buf, id);
    ioctl(
        &file,
        fs_path,
        "FS_IOC_GET_ENCRYPTION_KEY_STATUS",
        FS_IOC_GET_ENCRYPTION_KEY_STATUS,
        &mut buf,
    )?;
    let status = get_u32(&buf, 64);
    let flags = get_u32(&buf, 68);
    let user_count = get_u32(&buf, 72);
    match status {
        KEY_STATUS_ABSENT => Ok(KeyStatus::Absent),
        KEY_STATUS_PRESENT => Ok(KeyStatus::Present {
            added_by_self: flags & KEY_STATUS_FLAG_ADDED_BY_SELF != 0,
            user_count,
        }),
        KEY_STATUS_INCOMPLETELY_REMOVED => Ok(KeyStatus::IncompletelyRemoved),
        _ => Err(Error::Kernel {
            op: "FS_IOC_GET_ENCRYPTION_KEY_STATUS (unknown status)",
            path: fs_path.to_path_buf(),
            errno: libc::EPROTO,
        }),
    }
}

/// Sets a v2 policy on an empty directory. The policy's key must have been added.
///
/// Refuses a non-empty directory ([`Error::DirectoryNotEmpty`]): plaintext is never
/// migrated into an encrypted directory. Setting the same policy again is a no-op; a
/// different one gives [`Error::PolicyMismatch`].
pub fn set_policy(dir: &Path, policy: &PolicyV2) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| io_error("stat", dir, &e))?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    match get_policy(dir)? {
        Some(existing) if existing == *policy => return Ok(()),
        Some(_) => {
            return Err(Error::PolicyMismatch {
                path: dir.to_path_buf(),
            });
        }
        None => {}
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| io_error("readdir", dir, &e))?;
    if entries.next().is_some() {
        return Err(Error::DirectoryNotEmpty {
            path: dir.to_path_buf(),
        });
    }
    let file = open(dir)?;
    let mut buf = policy.to_bytes();
    match ioctl(
        &file,
        dir,
        "FS_IOC_SET_ENCRYPTION_POLICY",
        FS_IOC_SET_ENCRYPTION_POLICY,
        &mut buf,
    ) {
        Ok(()) => Ok(()),
        Err(Error::Kernel { errno, .. }) if errno == libc::ENOTEMPTY => {
            Err(Error::DirectoryNotEmpty {
                path: dir.to_path_buf(),
            })
        }
        Err(Error::Kernel { errno, .. }) if errno == libc::EEXIST => Err(Error::PolicyMismatch {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(e),
    }
}

/// The v2 policy of a file or directory; `Ok(None)` when it is not encrypted.
/// A v1 policy gives [`Error::UnsupportedVersion`].
pub fn get_policy(path: &Path) -> Result<Option<PolicyV2>> {
    let file = open(path)?;
    let mut buf = [0u8; 8 + POLICY_V2_SIZE];
    buf[..8].copy_from_slice(&(POLICY_V2_SIZE as u64).to_ne_bytes());
    match ioctl(
        &file,
        path,
        "FS_IOC_GET_ENCRYPTION_POLICY_EX",
        FS_IOC_GET_ENCRYPTION_POLICY_EX,
        &mut buf,
    ) {
        Ok(()) => {}
        Err(Error::Kernel { errno, .. }) if errno == libc::ENODATA => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&buf[..8]);
    let size = usize::try_from(u64::from_ne_bytes(size)).unwrap_or(usize::MAX);
    let body = buf
        .get(8..8usize.saturating_add(size))
        .ok_or(Error::Length {
            what: "policy returned by the kernel",
            expected: POLICY_V2_SIZE,
            got: size,
        })?;
    if body.first() != Some(&crate::policy::VERSION_V2) {
        return Err(Error::UnsupportedVersion {
            what: "policy returned by the kernel",
            version: body.first().copied().unwrap_or(0),
        });
    }
    PolicyV2::parse(body).map(Some)
}

/// The 16-byte nonce of an encrypted file or directory.
/// A file that is not encrypted gives [`Error::NotEncrypted`].
pub fn get_nonce(path: &Path) -> Result<[u8; NONCE_SIZE]> {
    let file = open(path)?;
    let mut nonce = [0u8; NONCE_SIZE];
    match ioctl(
        &file,
        path,
        "FS_IOC_GET_ENCRYPTION_NONCE",
        FS_IOC_GET_ENCRYPTION_NONCE,
        &mut nonce,
    ) {
        Err(Error::Kernel { errno, .. }) if errno == libc::ENODATA => Err(Error::NotEncrypted {
            path: path.to_path_buf(),
        }),
        other => other.map(|()| nonce),
    }
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| io_error("open", path, &e))
}

fn io_error(op: &'static str, path: &Path, e: &io::Error) -> Error {
    Error::Kernel {
        op,
        path: path.to_path_buf(),
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// The size field of an ioctl request number (`_IOC_SIZE`).
fn ioc_size(request: u32) -> usize {
    ((request >> 16) & 0x3fff) as usize
}

/// Calls `ioctl(fd, request, buf)`, mapping failures to [`Error::Kernel`].
fn ioctl(file: &File, path: &Path, op: &'static str, request: u32, buf: &mut [u8]) -> Result<()> {
    // Every structure the kernel touches for these requests is at least
    // `_IOC_SIZE(request)` bytes; refuse a buffer shorter than that.
    if buf.len() < ioc_size(request) {
        return Err(Error::Length {
            what: op,
            expected: ioc_size(request),
            got: buf.len(),
        });
    }
    #[allow(unsafe_code)]
    // SAFETY: `file` is open for the whole call, so the descriptor is valid. `buf` is a
    // live, exclusively borrowed region of `buf.len()` bytes, and for each request the
    // kernel reads/writes at most the structure the callers built in it: the fixed-size
    // `_IOC_SIZE` part (checked above) and, for FS_IOC_ADD_ENCRYPTION_KEY only,
    // `raw_size` (≤ 64) bytes after the 80-byte header, inside the 144-byte buffer
    // `add_key` passes. The kernel keeps no reference after returning.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, buf.as_mut_ptr()) };
    if rc < 0 {
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        return Err(match errno {
            libc::ENOTTY | libc::EOPNOTSUPP => Error::EncryptionUnsupported {
                path: path.to_path_buf(),
            },
            _ => Error::Kernel {
                op,
                path: path.to_path_buf(),
                errno,
            },
        });
    }
    Ok(())
}

fn put_key_spec(buf: &mut [u8], id: &KeyIdentifier) {
    put_u32(buf, 0, KEY_SPEC_TYPE_IDENTIFIER);
    buf[8..24].copy_from_slice(id.as_bytes());
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&buf[at..at + 4]);
    u32::from_ne_bytes(w)
}
