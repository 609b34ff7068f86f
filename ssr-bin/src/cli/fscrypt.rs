//! `ssr fscrypt`: key identifiers, names and contents for forensics (with the FEK in
//! hand, read a disk image offline), and the fscrypt status of a path.
//!
//! Key files hold the raw master key (16 to 64 bytes; the FEK is 32).

use std::fs;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use ssr_fscrypt::kernel::{self, KeyStatus};
use ssr_fscrypt::{ContextV2, InodeCipher, InodeInfo, MasterKey, Padding, PolicyV2};

use super::{CmdResult, Failure};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Print the master key identifier (32 hex characters) of a raw key file.
    KeyId {
        /// File holding the raw master key.
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Encrypt a file name as the kernel stores it in a directory; prints hex.
    EncryptName {
        #[command(flatten)]
        file: FileArgs,
        /// Filename padding of the policy (4, 8, 16 or 32).
        #[arg(long, default_value_t = 32)]
        padding: usize,
        /// The plaintext name.
        name: String,
    },
    /// Decrypt a stored (hex) file name.
    DecryptName {
        #[command(flatten)]
        file: FileArgs,
        /// Filename padding of the policy (does not change decryption).
        #[arg(long, default_value_t = 32)]
        padding: usize,
        /// The ciphertext name, hex.
        hex: String,
    },
    /// Decrypt raw file contents (whole data units, e.g. blocks read from an image).
    DecryptContents {
        #[command(flatten)]
        file: FileArgs,
        /// Data unit size (the file system block size unless the policy sets one).
        #[arg(long, default_value_t = 4096)]
        data_unit_size: usize,
        /// Index of the first data unit in IN (its logical block number).
        #[arg(long, default_value_t = 0)]
        first_index: u64,
        /// Truncate the output to this many bytes (the file's size).
        #[arg(long)]
        length: Option<u64>,
        /// Raw ciphertext.
        input: PathBuf,
        /// Where to write the plaintext.
        output: PathBuf,
    },
    /// Show the fscrypt policy, key identifier and key status of a path.
    Status {
        /// A file or directory on the file system.
        path: PathBuf,
    },
}

/// The key and the directory's or file's nonce (from `ea_get <ino> c`, bytes 24..40).
#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// File holding the raw master key.
    #[arg(long)]
    key_file: PathBuf,
    /// The inode's 16-byte nonce, hex.
    #[arg(long)]
    nonce: String,
}

pub fn run(cmd: Cmd) -> CmdResult {
    match cmd {
        Cmd::KeyId { key_file } => {
            println!("{}", read_key(&key_file)?.identifier());
            Ok(())
        }
        Cmd::EncryptName {
            file,
            padding,
            name,
        } => {
            let cipher = inode_cipher(&file, padding, 4096)?;
            let ct = cipher
                .encrypt_name(name.as_bytes())
                .map_err(Failure::usage)?;
            println!("{}", hex::encode(ct));
            Ok(())
        }
        Cmd::DecryptName { file, padding, hex } => {
            let cipher = inode_cipher(&file, padding, 4096)?;
            let ct = hex::decode(hex.trim()).map_err(|e| Failure::usage(format!("name: {e}")))?;
            let name = cipher.decrypt_name(&ct).map_err(Failure::general)?;
            println!("{}", String::from_utf8_lossy(&name));
            Ok(())
        }
        Cmd::DecryptContents {
            file,
            data_unit_size,
            first_index,
            length,
            input,
            output,
        } => {
            let cipher = inode_cipher(&file, 32, data_unit_size)?;
            let mut data = fs::read(&input)
                .map_err(|e| Failure::general(format!("{}: {e}", input.display())))?;
            cipher
                .decrypt_contents(first_index, &mut data)
                .map_err(Failure::usage)?;
            if let Some(len) = length {
                data.truncate(usize::try_from(len).unwrap_or(usize::MAX));
            }
            fs::write(&output, &data)
                .map_err(|e| Failure::general(format!("{}: {e}", output.display())))?;
            Ok(())
        }
        Cmd::Status { path } => {
            print!("{}", status(&path)?);
            Ok(())
        }
    }
}

fn read_key(path: &Path) -> Result<MasterKey, Failure> {
    let bytes = zeroize::Zeroizing::new(
        fs::read(path).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?,
    );
    MasterKey::from_bytes(&bytes).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}

fn inode_cipher(
    args: &FileArgs,
    padding: usize,
    data_unit_size: usize,
) -> Result<InodeCipher, Failure> {
    let key = read_key(&args.key_file)?;
    let mut nonce = [0u8; 16];
    hex::decode_to_slice(args.nonce.trim(), &mut nonce)
        .map_err(|_| Failure::usage("--nonce must be 32 hex characters"))?;
    let padding = Padding::from_bytes(padding)
        .ok_or_else(|| Failure::usage("--padding must be 4, 8, 16 or 32"))?;
    if !data_unit_size.is_power_of_two() || !(512..=65536).contains(&data_unit_size) {
        return Err(Failure::usage(
            "--data-unit-size must be a power of two from 512 to 65536",
        ));
    }
    let policy = PolicyV2::new(key.identifier()).with_padding(padding);
    InodeCipher::new(
        &key,
        &ContextV2::new(policy, nonce),
        InodeInfo::with_block_size(data_unit_size),
    )
    .map_err(Failure::general)
}

fn status(path: &Path) -> Result<String, Failure> {
    let Some(policy) = kernel::get_policy(path).map_err(Failure::general)? else {
        return Ok(format!("{}: not encrypted\n", path.display()));
    };
    let id = policy.key_identifier();
    let key = match kernel::key_status(path, &id).map_err(Failure::general)? {
        KeyStatus::Absent => "absent (locked)".to_string(),
        KeyStatus::Present {
            added_by_self,
            user_count,
        } => format!("present (users: {user_count}, added by this user: {added_by_self})"),
        KeyStatus::IncompletelyRemoved => "incompletely removed (files still in use)".into(),
        other => format!("{other:?}"),
    };
    let nonce = kernel::get_nonce(path).map_err(Failure::general)?;
    Ok(format!(
        "{}: encrypted (policy v2)\n  contents: {}\n  filenames: {}\n  padding: {}\n  flags: {:?}\n  data unit: {}\n  key identifier: {id}\n  key status: {key}\n  nonce: {}\n",
        path.display(),
        policy.contents_mode(),
        policy.filenames_mode(),
        policy.padding().bytes(),
        policy.iv_mode(),
        match policy.log2_data_unit_size() {
            0 => "file system block".to_string(),
            n => format!("{} bytes", 1u32 << n),
        },
        hex::encode(nonce),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(dir: &Path, key: &[u8]) -> PathBuf {
        let path = dir.join("fek");
        fs::write(&path, key).unwrap();
        path
    }

    #[test]
    fn names_and_contents_round_trip_through_the_commands() {
        let dir = tempfile::tempdir().unwrap();
        let kf = key_file(dir.path(), &[9u8; 32]);
        let args = FileArgs {
            key_file: kf.clone(),
            nonce: "00112233445566778899aabbccddeeff".into(),
        };
        let c = inode_cipher(&args, 16, 1024).unwrap();
        let ct = c.encrypt_name(b"hello").unwrap();
        assert_eq!(ct.len(), 16);
        // decrypt-contents over a file produced by the library.
        let mut data = b"secret contents".to_vec();
        data.resize(2048, 0);
        let plain = data.clone();
        c.encrypt_contents(5, &mut data).unwrap();
        fs::write(dir.path().join("in"), &data).unwrap();
        run(Cmd::DecryptContents {
            file: args,
            data_unit_size: 1024,
            first_index: 5,
            length: Some(15),
            input: dir.path().join("in"),
            output: dir.path().join("out"),
        })
        .unwrap();
        assert_eq!(fs::read(dir.path().join("out")).unwrap(), &plain[..15]);
    }

    #[test]
    fn bad_inputs_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let short = key_file(dir.path(), &[1u8; 8]);
        assert_eq!(read_key(&short).unwrap_err().code, Failure::USAGE);
        let kf = key_file(dir.path(), &[1u8; 32]);
        let args = FileArgs {
            key_file: kf,
            nonce: "zz".into(),
        };
        assert_eq!(
            inode_cipher(&args, 16, 4096).unwrap_err().code,
            Failure::USAGE
        );
    }

    #[test]
    fn status_of_a_real_encrypted_directory() {
        if !ssr_testkit::require_root() {
            return;
        }
        let fs = ssr_testkit::LoopExt4::create(16, 4096).unwrap();
        let mnt = fs.mount_point();
        let key = MasterKey::from_bytes(&[3u8; 32]).unwrap();
        let id = kernel::add_key(&mnt, &key).unwrap();
        let dir = mnt.join("enc");
        fs::create_dir(&dir).unwrap();
        kernel::set_policy(&dir, &PolicyV2::new(id)).unwrap();
        let out = status(&dir).unwrap();
        assert!(out.contains(&format!("key identifier: {id}")), "{out}");
        assert!(out.contains("key status: present"), "{out}");
        assert!(out.contains("AES-256-XTS"), "{out}");
        assert!(status(&mnt).unwrap().contains("not encrypted"));
    }

    /// The forensic workflow on a real image: the kernel writes an encrypted file,
    /// the image is unmounted, and with the key file, the nonce from `debugfs` and
    /// the raw blocks, `decrypt-contents` recovers the plaintext.
    #[test]
    fn decrypt_contents_recovers_a_file_from_a_real_image() {
        use std::os::unix::fs::MetadataExt;
        if !ssr_testkit::require_root() {
            return;
        }
        let mut fs = ssr_testkit::LoopExt4::create(16, 1024).unwrap();
        let mnt = fs.mount_point();
        let tmp = tempfile::tempdir().unwrap();
        let kf = key_file(tmp.path(), &[0x5c; 32]);
        let key = read_key(&kf).unwrap();
        let id = kernel::add_key(&mnt, &key).unwrap();
        let dir = mnt.join("enc");
        fs::create_dir(&dir).unwrap();
        kernel::set_policy(&dir, &PolicyV2::new(id)).unwrap();
        let plain: Vec<u8> = (0..2500u32).map(|i| (i * 7) as u8).collect();
        fs::write(dir.join("conf"), &plain).unwrap();
        let ino = fs::metadata(dir.join("conf")).unwrap().ino();
        let mut unmounted = false;
        for _ in 0..30 {
            if fs.unmount().is_ok() {
                unmounted = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(unmounted);
        let ea = fs.debugfs(&format!("ea_get -x <{ino}> c")).unwrap();
        let ctx: Vec<u8> = ea
            .split(" = ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        let nonce = hex::encode(&ctx[24..40]);
        let mut raw = Vec::new();
        for b in fs
            .debugfs(&format!("blocks <{ino}>"))
            .unwrap()
            .split_whitespace()
        {
            raw.extend(fs.read_blocks(b.parse().unwrap(), 1).unwrap());
        }
        assert_eq!(raw.len(), 3 * 1024);
        assert_ne!(&raw[..plain.len()], &plain[..]);
        fs::write(tmp.path().join("raw"), &raw).unwrap();
        run(Cmd::DecryptContents {
            file: FileArgs {
                key_file: kf,
                nonce,
            },
            data_unit_size: 1024,
            first_index: 0,
            length: Some(plain.len() as u64),
            input: tmp.path().join("raw"),
            output: tmp.path().join("plain"),
        })
        .unwrap();
        assert_eq!(fs::read(tmp.path().join("plain")).unwrap(), plain);
    }
}
