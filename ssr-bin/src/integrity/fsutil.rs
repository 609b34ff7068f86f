//! Durable file-system steps: each survives a power loss once it returns.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::error::{Error, Result};

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename,
/// fsync of the directory. A crash leaves the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent(path)?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::io("write", path, std::io::ErrorKind::InvalidInput.into()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", &tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| Error::io("rename into", path, e))?;
    sync_dir(dir)
}

/// Creates `dir` (and its missing parents, top down) and makes every new entry durable:
/// each directory created is fsynced in its own parent, so a power loss cannot keep a
/// child whose parent's entry was lost.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    let parent = parent(dir)?;
    if !parent.is_dir() {
        create_dir_durable(parent)?;
    }
    fs::create_dir(dir).map_err(|e| Error::io("create", dir, e))?;
    sync_dir(parent)
}

/// Removes the empty directory `dir` durably.
pub fn remove_empty_dir_durable(dir: &Path) -> Result<()> {
    fs::remove_dir(dir).map_err(|e| Error::io("remove", dir, e))?;
    sync_dir(parent(dir)?)
}

/// Flushes a directory's entries (and, for an encrypted one, its new policy).
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", dir, e))
}

/// True when the directory has no entries (works on a locked encrypted directory).
pub fn dir_is_empty(dir: &Path) -> Result<bool> {
    let mut entries = fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
    Ok(entries.next().is_none())
}

fn parent(path: &Path) -> Result<&Path> {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            Error::io(
                "find the parent of",
                path,
                std::io::ErrorKind::InvalidInput.into(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn directories_are_created_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        create_dir_durable(&d).unwrap();
        assert!(dir_is_empty(&d).unwrap());
        fs::write(d.join("x"), b"").unwrap();
        assert!(!dir_is_empty(&d).unwrap());
        assert!(remove_empty_dir_durable(&d).is_err());
        fs::remove_file(d.join("x")).unwrap();
        remove_empty_dir_durable(&d).unwrap();
        assert!(!d.exists());
    }
}
