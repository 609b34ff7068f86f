//! Byte-for-byte equality with the real kernel: a loop-mounted ext4 with `encrypt`,
//! a known master key, v2 policies with padding 16 and 32, files of several sizes
//! and names of several lengths; after unmounting, the on-disk contexts (debugfs
//! `ea_get`), the raw data blocks and the raw directory entries are compared with
//! what the pure-Rust code produces, and decrypted back.
#![cfg(feature = "kernel")]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ssr_fscrypt::kernel::{KeyStatus, RemoveOutcome};
use ssr_fscrypt::{
    ContextV2, Error, InodeCipher, InodeInfo, IvMode, MasterKey, NoKeyName, Padding, PolicyV2,
    kernel,
};
use ssr_testkit::LoopExt4;

const NAME_LENGTHS: [usize; 6] = [1, 15, 16, 17, 100, 255];

/// A deterministic name of `len` bytes (printable, no '/').
fn name_of(len: usize, salt: usize) -> Vec<u8> {
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
    (0..len)
        .map(|i| alphabet[(i * 7 + salt * 13 + len) % alphabet.len()])
        .collect()
}

fn contents_of(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(salt as u32 % 32) as u8
                ^ salt
        })
        .collect()
}

/// `ea_get -x <ino> c`: the 40-byte encryption context xattr.
fn context_of(fs: &LoopExt4, ino: u64) -> ContextV2 {
    let out = fs.debugfs(&format!("ea_get -x <{ino}> c")).unwrap();
    let hex_part = out.split(" = ").nth(1).unwrap_or_else(|| panic!("{out}"));
    let bytes: Vec<u8> = hex_part
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    assert_eq!(bytes.len(), 40, "{out}");
    ContextV2::parse(&bytes).unwrap()
}

/// The raw blocks of an inode, in logical order.
fn raw_blocks(fs: &LoopExt4, ino: u64) -> Vec<u8> {
    let out = fs.debugfs(&format!("blocks <{ino}>")).unwrap();
    let mut raw = Vec::new();
    for b in out.split_whitespace() {
        raw.extend(fs.read_blocks(b.parse().unwrap(), 1).unwrap());
    }
    raw
}

/// Parses ext4 linear directory blocks (also skips htree/csum-tail fake entries,
/// whose inode is 0): inode number → stored (ciphertext) name.
fn dirents(raw: &[u8], block_size: usize) -> BTreeMap<u64, Vec<u8>> {
    let mut out = BTreeMap::new();
    for block in raw.chunks(block_size) {
        let mut off = 0;
        while off + 8 <= block.len() {
            let ino = u32::from_le_bytes(block[off..off + 4].try_into().unwrap());
            let rec_len = u16::from_le_bytes(block[off + 4..off + 6].try_into().unwrap()) as usize;
            let name_len = block[off + 6] as usize;
            assert!(rec_len >= 8 && off + rec_len <= block.len(), "bad dirent");
            let name = &block[off + 8..off + 8 + name_len];
            if ino != 0 && name != b"." && name != b".." {
                out.insert(u64::from(ino), name.to_vec());
            }
            off += rec_len;
        }
    }
    out
}

/// Unmounts, retrying while something transient (a udev probe of the loop device,
/// another test's process scanning mounts) keeps the mount busy for a moment.
fn unmount(fs: &mut LoopExt4) {
    let mut last = None;
    for _ in 0..30 {
        match fs.unmount() {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("cannot unmount: {last:?}");
}

struct Written {
    name: Vec<u8>,
    contents: Vec<u8>,
    ino: u64,
    nonce: [u8; 16],
}

fn check_block_size(block_size: u32) {
    let mut fs = LoopExt4::create(16, block_size).unwrap();
    let bs = block_size as usize;
    let mnt = fs.mount_point();
    let key = MasterKey::from_bytes(&contents_of(32, block_size as u8 ^ 0x5a)).unwrap();
    let id = kernel::add_key(&mnt, &key).unwrap();
    assert_eq!(
        id,
        key.identifier(),
        "kernel and HKDF agree on the identifier"
    );

    let sizes = [1, 15, bs - 1, bs, bs + 1, 3 * bs + 517];
    let mut dirs = Vec::new();
    for (d, padding) in [Padding::Pad16, Padding::Pad32].into_iter().enumerate() {
        let dir = mnt.join(format!("enc{}", padding.bytes()));
        fs::create_dir(&dir).unwrap();
        let policy = PolicyV2::new(id).with_padding(padding);
        kernel::set_policy(&dir, &policy).unwrap();
        assert_eq!(kernel::get_policy(&dir).unwrap(), Some(policy));
        let mut files = Vec::new();
        for (i, (&len, &size)) in NAME_LENGTHS.iter().zip(sizes.iter()).enumerate() {
            let name = name_of(len, i + d);
            let contents = contents_of(size, (i * 31 + d) as u8);
            let path = dir.join(std::str::from_utf8(&name).unwrap());
            fs::write(&path, &contents).unwrap();
            fs::File::open(&path).unwrap().sync_all().unwrap();
            let ino = fs::metadata(&path).unwrap().ino();
            let nonce = kernel::get_nonce(&path).unwrap();
            files.push(Written {
                name,
                contents,
                ino,
                nonce,
            });
        }
        let dir_ino = fs::metadata(&dir).unwrap().ino();
        let dir_nonce = kernel::get_nonce(&dir).unwrap();
        dirs.push((dir.clone(), policy, dir_ino, dir_nonce, files));
    }
    unmount(&mut fs);

    let info = InodeInfo::with_block_size(bs);
    for (_, policy, dir_ino, dir_nonce, files) in &dirs {
        let dir_ctx = context_of(&fs, *dir_ino);
        assert_eq!(dir_ctx.policy(), policy);
        assert_eq!(
            dir_ctx.nonce(),
            dir_nonce,
            "on-disk nonce = FS_IOC_GET_ENCRYPTION_NONCE"
        );
        let dir_cipher = InodeCipher::new(&key, &dir_ctx, info).unwrap();
        let entries = dirents(&raw_blocks(&fs, *dir_ino), bs);
        assert_eq!(entries.len(), files.len());
        for f in files {
            // Names.
            let stored = &entries[&f.ino];
            assert_eq!(
                &dir_cipher.encrypt_name(&f.name).unwrap(),
                stored,
                "name of {} bytes, padding {}",
                f.name.len(),
                policy.padding().bytes()
            );
            assert_eq!(dir_cipher.decrypt_name(stored).unwrap(), f.name);

            // Contents: whole blocks, zeros past EOF before encryption.
            let ctx = context_of(&fs, f.ino);
            assert_eq!(ctx.nonce(), &f.nonce);
            assert_eq!(ctx.policy(), policy);
            let cipher = InodeCipher::new(&key, &ctx, info).unwrap();
            let raw = raw_blocks(&fs, f.ino);
            assert_eq!(raw.len(), f.contents.len().div_ceil(bs) * bs);
            let mut expected = f.contents.clone();
            expected.resize(raw.len(), 0);
            let plain = expected.clone();
            cipher.encrypt_contents(0, &mut expected).unwrap();
            assert!(
                expected == raw,
                "contents of {} bytes, block size {bs}",
                f.contents.len()
            );
            let mut decrypted = raw.clone();
            cipher.decrypt_contents(0, &mut decrypted).unwrap();
            assert_eq!(decrypted, plain);
        }
    }

    // Remounted without the key: readdir shows the kernel's no-key names, which
    // must designate exactly the ciphertexts computed above.
    fs.mount().unwrap();
    assert_eq!(kernel::key_status(&mnt, &id).unwrap(), KeyStatus::Absent);
    for (dir, _, _, _, files) in &dirs {
        let dir_ctx = context_of_mounted(dir);
        let dir_cipher = InodeCipher::new(&key, &dir_ctx, info).unwrap();
        let listed: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(listed.len(), files.len());
        for f in files {
            let ct = dir_cipher.encrypt_name(&f.name).unwrap();
            let hits = listed
                .iter()
                .filter(|l| NoKeyName::decode(l).unwrap().matches(&ct))
                .count();
            assert_eq!(hits, 1, "no-key name for {} bytes", f.name.len());
        }
    }
}

fn context_of_mounted(dir: &Path) -> ContextV2 {
    let policy = kernel::get_policy(dir).unwrap().unwrap();
    ContextV2::new(policy, kernel::get_nonce(dir).unwrap())
}

#[test]
fn kernel_bytes_4096() {
    if !ssr_testkit::require_root() {
        return;
    }
    check_block_size(4096);
}

#[test]
fn kernel_bytes_1024() {
    if !ssr_testkit::require_root() {
        return;
    }
    check_block_size(1024);
}

#[test]
fn adapter_refuses_non_empty_and_reports_busy_files() {
    if !ssr_testkit::require_root() {
        return;
    }
    let fs = LoopExt4::create(16, 4096).unwrap();
    let mnt = fs.mount_point();
    let key = MasterKey::from_bytes(&[0x77; 32]).unwrap();
    let id = key.identifier();
    assert_eq!(kernel::key_status(&mnt, &id).unwrap(), KeyStatus::Absent);
    assert_eq!(kernel::add_key(&mnt, &key).unwrap(), id);
    assert!(matches!(
        kernel::key_status(&mnt, &id).unwrap(),
        KeyStatus::Present {
            added_by_self: true,
            ..
        }
    ));

    // Not encrypted: get_policy says None, get_nonce says NotEncrypted.
    let plain = mnt.join("plain");
    fs::create_dir(&plain).unwrap();
    assert_eq!(kernel::get_policy(&plain).unwrap(), None);
    assert!(matches!(
        kernel::get_nonce(&plain),
        Err(Error::NotEncrypted { .. })
    ));

    // Non-empty directory: refused, nothing set.
    fs::write(plain.join("secret.txt"), b"plaintext").unwrap();
    let policy = PolicyV2::new(id);
    assert!(matches!(
        kernel::set_policy(&plain, &policy),
        Err(Error::DirectoryNotEmpty { .. })
    ));
    assert_eq!(kernel::get_policy(&plain).unwrap(), None);

    // Empty directory: set, idempotent, a different policy is refused.
    let enc = mnt.join("enc");
    fs::create_dir(&enc).unwrap();
    kernel::set_policy(&enc, &policy).unwrap();
    kernel::set_policy(&enc, &policy).unwrap();
    assert!(matches!(
        kernel::set_policy(&enc, &policy.with_padding(Padding::Pad4)),
        Err(Error::PolicyMismatch { .. })
    ));
    assert!(matches!(
        kernel::set_policy(
            &enc,
            &policy
                .with_iv_mode(IvMode::PerFileKey)
                .unwrap()
                .with_padding(Padding::Pad8)
        ),
        Err(Error::PolicyMismatch { .. })
    ));
    fs::write(enc.join("f"), b"data").unwrap();

    // Removing with a file open: FILES_BUSY, then removed once closed.
    let open = fs::File::open(enc.join("f")).unwrap();
    assert_eq!(
        kernel::remove_key(&mnt, &id).unwrap(),
        RemoveOutcome::FilesBusy
    );
    assert_eq!(
        kernel::key_status(&mnt, &id).unwrap(),
        KeyStatus::IncompletelyRemoved
    );
    drop(open);
    assert_eq!(
        kernel::remove_key(&mnt, &id).unwrap(),
        RemoveOutcome::Removed
    );
    assert_eq!(kernel::key_status(&mnt, &id).unwrap(), KeyStatus::Absent);
    // Locked: the name is no longer readable.
    assert!(fs::read(enc.join("f")).is_err());
    // Removing an absent key: ENOKEY.
    assert!(matches!(
        kernel::remove_key(&mnt, &id),
        Err(Error::Kernel { errno, .. }) if errno == 126
    ));
}

/// The file system UUID (`s_uuid`) from `debugfs stats`.
fn fs_uuid(fs: &LoopExt4) -> [u8; 16] {
    let stats = fs.debugfs("stats").unwrap();
    let line = stats
        .lines()
        .find(|l| l.starts_with("Filesystem UUID:"))
        .unwrap();
    let hex: String = line["Filesystem UUID:".len()..]
        .trim()
        .chars()
        .filter(|c| *c != '-')
        .collect();
    hex::decode(hex).unwrap().try_into().unwrap()
}

/// IV_INO_LBLK_64 and IV_INO_LBLK_32 (per-mode keys bound to the file system UUID,
/// IVs from the inode number or its SipHash): ext4 needs `stable_inodes` for them.
#[test]
fn kernel_bytes_iv_ino_lblk() {
    if !ssr_testkit::require_root() {
        return;
    }
    let mut fs = LoopExt4::create(16, 4096).unwrap();
    unmount(&mut fs);
    ssr_testkit::run(
        std::process::Command::new("tune2fs")
            .args(["-O", "stable_inodes"])
            .arg(fs.image()),
    )
    .unwrap();
    fs.mount().unwrap();
    let uuid = fs_uuid(&fs);
    let mnt = fs.mount_point();
    let key = MasterKey::from_bytes(&contents_of(48, 0x33)).unwrap();
    let id = kernel::add_key(&mnt, &key).unwrap();
    assert_eq!(id, key.identifier());

    let mut dirs = Vec::new();
    for iv in [IvMode::IvInoLblk64, IvMode::IvInoLblk32] {
        let dir = mnt.join(format!("{iv:?}"));
        fs::create_dir(&dir).unwrap();
        let policy = PolicyV2::new(id)
            .with_padding(Padding::Pad16)
            .with_iv_mode(iv)
            .unwrap();
        kernel::set_policy(&dir, &policy).unwrap();
        let mut files = Vec::new();
        for (i, (len, size)) in [(5usize, 100usize), (40, 4096 * 2 + 3)]
            .into_iter()
            .enumerate()
        {
            let name = name_of(len, i);
            let contents = contents_of(size, i as u8 + 9);
            let path = dir.join(std::str::from_utf8(&name).unwrap());
            fs::write(&path, &contents).unwrap();
            let ino = fs::metadata(&path).unwrap().ino();
            files.push((name, contents, ino));
        }
        dirs.push((fs::metadata(&dir).unwrap().ino(), policy, files));
    }
    unmount(&mut fs);

    for (dir_ino, policy, files) in &dirs {
        let dir_ctx = context_of(&fs, *dir_ino);
        assert_eq!(dir_ctx.policy(), policy);
        let info = |ino| InodeInfo {
            ino,
            fs_uuid: uuid,
            fs_block_size: 4096,
        };
        let dir_cipher = InodeCipher::new(&key, &dir_ctx, info(*dir_ino)).unwrap();
        let entries = dirents(&raw_blocks(&fs, *dir_ino), 4096);
        for (name, contents, ino) in files {
            assert_eq!(
                &dir_cipher.encrypt_name(name).unwrap(),
                &entries[ino],
                "{:?} name",
                policy.iv_mode()
            );
            let cipher = InodeCipher::new(&key, &context_of(&fs, *ino), info(*ino)).unwrap();
            let raw = raw_blocks(&fs, *ino);
            let mut expected = contents.clone();
            expected.resize(raw.len(), 0);
            cipher.encrypt_contents(0, &mut expected).unwrap();
            assert!(expected == raw, "{:?} contents", policy.iv_mode());
        }
    }
}
