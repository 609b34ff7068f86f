//! Atomic file replacement, shared by the sealed-FEK file and the key store.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::Error;

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new
/// one, never a mix: write a temporary file in the same directory, fsync it, rename it
/// over `path`, fsync the directory. The file is created with mode 0600.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = path.file_name() else {
        return Err(Error::InvalidConfig {
            reason: format!("{} is not a file path", path.display()),
        });
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(|e| Error::io("create", &tmp, &e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io("write", &tmp, &e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, &e))?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, &e))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync directory", &dir, &e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a whole file, refusing anything larger than `limit` bytes (the formats are
/// small; a huge file is corrupt, not something to load into memory).
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, std::io::Error> {
    use std::io::Read as _;
    let f = File::open(path)?;
    let mut bytes = Vec::new();
    f.take(limit + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}
