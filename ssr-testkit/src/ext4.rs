//! A loop-mounted ext4 with the `encrypt` feature.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::{is_mount_point, run};

/// An ext4 image made with `mkfs.ext4 -b <block size> -O encrypt`, loop-mounted on a
/// temporary directory; unmounted and deleted on drop. Needs root.
///
/// ```no_run
/// let fs = ssr_testkit::LoopExt4::create(64, 4096)?;
/// std::fs::create_dir(fs.mount_point().join("secret"))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct LoopExt4 {
    dir: TempDir,
    block_size: u32,
}

impl LoopExt4 {
    /// Creates a `size_mib` MiB image with the given block size (1024, 2048 or 4096) and
    /// mounts it.
    pub fn create(size_mib: u64, block_size: u32) -> io::Result<LoopExt4> {
        if !matches!(block_size, 1024 | 2048 | 4096) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ext4 block size {block_size} is not 1024, 2048 or 4096"),
            ));
        }
        let dir = tempfile::Builder::new().prefix("ssr-ext4-").tempdir()?;
        let fs = LoopExt4 { dir, block_size };
        File::create(fs.image())?.set_len(size_mib * 1024 * 1024)?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", &block_size.to_string(), "-O", "encrypt"])
            .arg(fs.image()))?;
        fs::create_dir(fs.mount_point())?;
        let mut fs = fs;
        fs.mount()?;
        Ok(fs)
    }

    /// The directory the filesystem is mounted on.
    pub fn mount_point(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// The image file.
    pub fn image(&self) -> PathBuf {
        self.dir.path().join("ext4.img")
    }

    /// The filesystem block size.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// True while mounted.
    pub fn is_mounted(&self) -> bool {
        is_mount_point(&self.mount_point())
    }

    /// Mounts the image (again) on [`mount_point`](Self::mount_point).
    pub fn mount(&mut self) -> io::Result<()> {
        if self.is_mounted() {
            return Ok(());
        }
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(self.image())
            .arg(self.mount_point()))?;
        Ok(())
    }

    /// Unmounts, flushing everything to the image (so raw reads see the final bytes).
    pub fn unmount(&mut self) -> io::Result<()> {
        if !self.is_mounted() {
            return Ok(());
        }
        run(Command::new("umount").arg(self.mount_point()))?;
        Ok(())
    }

    /// Runs `debugfs -R <request> <image>` and returns its standard output.
    /// Unmount first for a view that includes everything written.
    pub fn debugfs(&self, request: &str) -> io::Result<String> {
        let output = run(Command::new("debugfs")
            .arg("-R")
            .arg(request)
            .arg(self.image()))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Reads `count` filesystem blocks starting at block `first` straight from the image.
    pub fn read_blocks(&self, first: u64, count: u64) -> io::Result<Vec<u8>> {
        let bs = u64::from(self.block_size);
        let mut file = File::open(self.image())?;
        file.seek(SeekFrom::Start(first * bs))?;
        let len = usize::try_from(count * bs).map_err(io::Error::other)?;
        let mut buf = vec![0u8; len];
        file.read_exact(&mut buf)?;
        Ok(buf)
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        let mnt = self.mount_point();
        if is_mount_point(&mnt) && run(Command::new("umount").arg(&mnt)).is_err() {
            // Something still holds it (a failing test's open file): detach lazily so
            // the image can go; the kernel finishes when the last user lets go.
            let _ = Command::new("umount").arg("-l").arg(&mnt).status();
        }
    }
}

/// Lists `path`'s entries' names, sorted (for assertions about directory contents).
pub fn list_names(path: &Path) -> io::Result<Vec<String>> {
    let mut names = fs::read_dir(path)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_encrypt_capable_ext4_and_cleans_up() {
        if !crate::require_root() {
            return;
        }
        let mut fs = LoopExt4::create(16, 4096).unwrap();
        let mnt = fs.mount_point();
        assert!(fs.is_mounted());
        fs::write(mnt.join("hello"), b"world").unwrap();
        assert!(list_names(&mnt).unwrap().contains(&"hello".to_string()));
        let features = fs.debugfs("features").unwrap();
        assert!(features.contains("encrypt"), "{features}");
        fs.unmount().unwrap();
        assert!(!fs.is_mounted());
        let stat = fs.debugfs("stat /hello").unwrap();
        assert!(stat.contains("Size: 5"), "{stat}");
        fs.mount().unwrap();
        assert_eq!(fs::read(mnt.join("hello")).unwrap(), b"world");
        let image = fs.image();
        drop(fs);
        assert!(!is_mount_point(&mnt));
        assert!(!image.exists());
    }

    #[test]
    fn small_blocks_and_raw_reads() {
        if !crate::require_root() {
            return;
        }
        let fs = LoopExt4::create(8, 1024).unwrap();
        assert!(
            fs.debugfs("stats")
                .unwrap()
                .contains("Block size:               1024")
        );
        // The superblock sits at byte 1024: block 1 with 1 KiB blocks; magic 0xEF53 at 0x38.
        let sb = fs.read_blocks(1, 1).unwrap();
        assert_eq!(&sb[0x38..0x3a], &[0x53, 0xef]);
    }

    #[test]
    fn rejects_odd_block_size() {
        assert_eq!(
            LoopExt4::create(8, 512).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
