//! Round trips and "any bytes give an error, never a panic" for every parser.

use proptest::prelude::*;
use ssr_fscrypt::{
    ContextV2, EncryptionMode, InodeCipher, InodeInfo, IvMode, KeyIdentifier, MasterKey, NoKeyName,
    Padding, PolicyV2, encrypted_name_len,
};

fn padding() -> impl Strategy<Value = Padding> {
    prop_oneof![
        Just(Padding::Pad4),
        Just(Padding::Pad8),
        Just(Padding::Pad16),
        Just(Padding::Pad32)
    ]
}

fn iv_mode() -> impl Strategy<Value = IvMode> {
    prop_oneof![
        Just(IvMode::PerFileKey),
        Just(IvMode::DirectKey),
        Just(IvMode::IvInoLblk64),
        Just(IvMode::IvInoLblk32)
    ]
}

fn policy() -> impl Strategy<Value = PolicyV2> {
    (
        any::<[u8; 16]>(),
        padding(),
        iv_mode(),
        prop_oneof![Just(0u8), 9u8..=16],
    )
        .prop_filter_map("valid combination", |(id, pad, iv, log2)| {
            PolicyV2::new(KeyIdentifier(id))
                .with_padding(pad)
                .with_iv_mode(iv)
                .ok()?
                .with_log2_data_unit_size(log2)
                .ok()
        })
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no NUL or /", |b| *b != 0 && *b != b'/'),
        1..=255,
    )
}

proptest! {
    #[test]
    fn policy_round_trips(p in policy()) {
        prop_assert_eq!(PolicyV2::parse(&p.to_bytes()).unwrap(), p);
    }

    #[test]
    fn context_round_trips(p in policy(), nonce in any::<[u8; 16]>()) {
        let c = ContextV2::new(p, nonce);
        prop_assert_eq!(ContextV2::parse(&c.to_bytes()).unwrap(), c);
    }

    #[test]
    fn any_bytes_to_policy_parser(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(p) = PolicyV2::parse(&data) {
            prop_assert_eq!(&p.to_bytes()[..], &data[..]);
        }
    }

    #[test]
    fn any_bytes_to_context_parser(data in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(c) = ContextV2::parse(&data) {
            prop_assert_eq!(&c.to_bytes()[..], &data[..]);
        }
    }

    /// Near-valid contexts: a valid one with one byte changed is either still valid
    /// (re-encodes identically) or an error.
    #[test]
    fn mutated_contexts(p in policy(), nonce in any::<[u8; 16]>(), at in 0usize..40, v in any::<u8>()) {
        let mut bytes = ContextV2::new(p, nonce).to_bytes();
        bytes[at] = v;
        if let Ok(c) = ContextV2::parse(&bytes) {
            prop_assert_eq!(c.to_bytes(), bytes);
        }
    }

    #[test]
    fn any_string_to_nokey_decoder(s in ".{0,300}") {
        if let Ok(n) = NoKeyName::decode(&s) {
            prop_assert_eq!(n.encode(), s);
        }
    }

    #[test]
    fn nokey_names_round_trip(ct in proptest::collection::vec(any::<u8>(), 16..=255), h in any::<u32>(), m in any::<u32>()) {
        let n = NoKeyName::from_ciphertext(&ct, h, m);
        let decoded = NoKeyName::decode(&n.encode()).unwrap();
        prop_assert!(decoded.matches(&ct));
        prop_assert_eq!(decoded, n);
    }

    #[test]
    fn names_round_trip(key in any::<[u8; 32]>(), nonce in any::<[u8; 16]>(), pad in padding(), name in name()) {
        let key = MasterKey::from_bytes(&key).unwrap();
        let policy = PolicyV2::new(key.identifier()).with_padding(pad);
        let c = InodeCipher::new(&key, &ContextV2::new(policy, nonce), InodeInfo::with_block_size(4096)).unwrap();
        let ct = c.encrypt_name(&name).unwrap();
        prop_assert_eq!(ct.len(), encrypted_name_len(name.len(), pad, 255).unwrap());
        prop_assert_eq!(c.decrypt_name(&ct).unwrap(), name);
    }

    #[test]
    fn any_bytes_to_name_decryption(ct in proptest::collection::vec(any::<u8>(), 0..300)) {
        let key = MasterKey::from_bytes(&[1; 32]).unwrap();
        let c = InodeCipher::new(&key, &ContextV2::new(PolicyV2::new(key.identifier()), [0; 16]), InodeInfo::with_block_size(1024)).unwrap();
        let r = c.decrypt_name(&ct);
        prop_assert_eq!(r.is_ok(), (16..=255).contains(&ct.len()));
    }

    #[test]
    fn contents_round_trip(
        key in any::<[u8; 32]>(),
        nonce in any::<[u8; 16]>(),
        iv in prop_oneof![Just(IvMode::PerFileKey), Just(IvMode::IvInoLblk64), Just(IvMode::IvInoLblk32)],
        units in 1usize..4,
        first in 0u64..1_000_000,
        ino in 1u64..100_000,
        seed in any::<u8>(),
    ) {
        let key = MasterKey::from_bytes(&key).unwrap();
        let policy = PolicyV2::new(key.identifier()).with_iv_mode(iv).unwrap();
        let info = InodeInfo { ino, fs_uuid: [seed; 16], fs_block_size: 1024 };
        let c = InodeCipher::new(&key, &ContextV2::new(policy, nonce), info).unwrap();
        let plain: Vec<u8> = (0..units * 1024).map(|i| (i as u8).wrapping_mul(seed)).collect();
        let mut buf = plain.clone();
        c.encrypt_contents(first, &mut buf).unwrap();
        prop_assert_ne!(&buf, &plain);
        c.decrypt_contents(first, &mut buf).unwrap();
        prop_assert_eq!(buf, plain);
    }

    #[test]
    fn key_identifier_hex_round_trips(id in any::<[u8; 16]>()) {
        let id = KeyIdentifier(id);
        let hex = id.to_string();
        prop_assert_eq!(hex.len(), 32);
        prop_assert_eq!(hex.parse::<KeyIdentifier>().unwrap(), id);
    }

    #[test]
    fn master_key_lengths(len in 0usize..100) {
        prop_assert_eq!(MasterKey::from_bytes(&vec![7; len]).is_ok(), (16..=64).contains(&len));
    }
}

#[test]
fn parsers_reject_what_the_kernel_rejects() {
    let good = PolicyV2::new(KeyIdentifier([1; 16])).to_bytes();
    let bad = |i: usize, v: u8| {
        let mut b = good;
        b[i] = v;
        PolicyV2::parse(&b)
    };
    assert!(bad(0, 1).is_err(), "v1 / unknown version");
    assert!(bad(0, 0).is_err());
    assert!(bad(1, 2).is_err(), "mode 2 is not defined");
    assert!(bad(1, 4).is_err(), "CTS is not a contents mode");
    assert!(bad(2, 1).is_err(), "XTS is not a filenames mode");
    assert!(bad(3, 0x0c).is_err(), "two IV flags");
    assert!(bad(3, 0x20).is_err(), "unknown flag");
    assert!(bad(4, 8).is_err(), "data unit below 512");
    assert!(bad(4, 17).is_err());
    assert!(bad(5, 1).is_err(), "reserved");
    assert!(bad(7, 1).is_err(), "reserved");
    assert!(PolicyV2::parse(&good[..23]).is_err());
    let mut long = good.to_vec();
    long.push(0);
    assert!(PolicyV2::parse(&long).is_err(), "trailing bytes");
    // Valid: Adiantum pair, padding 4, DIRECT_KEY, 512-byte data units.
    let mut ok = good;
    ok[1] = 9;
    ok[2] = 9;
    ok[3] = 0x04;
    ok[4] = 9;
    let p = PolicyV2::parse(&ok).unwrap();
    assert_eq!(p.contents_mode(), EncryptionMode::Adiantum);
    assert_eq!(p.iv_mode(), IvMode::DirectKey);
    assert_eq!(p.data_unit_size(4096), 512);
    // IV_INO_LBLK_32 with a data unit size is refused (as the kernel does).
    let mut x = good;
    x[3] = 0x10;
    x[4] = 12;
    assert!(PolicyV2::parse(&x).is_err());
}

#[test]
fn inode_cipher_refuses_the_wrong_key_and_unimplemented_modes() {
    let key = MasterKey::from_bytes(&[1; 32]).unwrap();
    let other = MasterKey::from_bytes(&[2; 32]).unwrap();
    let ctx = ContextV2::new(PolicyV2::new(other.identifier()), [0; 16]);
    let info = InodeInfo::with_block_size(4096);
    assert!(matches!(
        InodeCipher::new(&key, &ctx, info),
        Err(ssr_fscrypt::Error::WrongKey { .. })
    ));
    let adiantum = PolicyV2::new(key.identifier())
        .with_modes(EncryptionMode::Adiantum, EncryptionMode::Adiantum)
        .unwrap();
    assert!(matches!(
        InodeCipher::new(&key, &ContextV2::new(adiantum, [0; 16]), info),
        Err(ssr_fscrypt::Error::Unsupported { .. })
    ));
    // IV_INO_LBLK_64 needs 32-bit inode numbers and data unit indices.
    let p64 = PolicyV2::new(key.identifier())
        .with_iv_mode(IvMode::IvInoLblk64)
        .unwrap();
    let big = InodeInfo {
        ino: 1 << 32,
        fs_uuid: [0; 16],
        fs_block_size: 4096,
    };
    assert!(InodeCipher::new(&key, &ContextV2::new(p64, [0; 16]), big).is_err());
    let c = InodeCipher::new(
        &key,
        &ContextV2::new(p64, [0; 16]),
        InodeInfo { ino: 5, ..big },
    )
    .unwrap();
    let mut buf = vec![0u8; 4096];
    assert!(c.encrypt_contents(1 << 32, &mut buf).is_err());
    assert_eq!(c.iv(7).unwrap()[..8], ((5u64 << 32) | 7).to_le_bytes());
}

#[test]
fn secrets_are_redacted() {
    let key = MasterKey::from_bytes(&[0xab; 32]).unwrap();
    let dbg = format!("{key:?}");
    assert!(!dbg.contains("ab") && dbg.contains("redacted"), "{dbg}");
    let fk = key.derive_file_key(&[0; 16], EncryptionMode::Aes256Xts);
    assert_eq!(fk.secret_bytes().len(), 64);
    assert!(format!("{fk:?}").contains("redacted"));
}
