//! SipHash-2-4 (Aumasson & Bernstein), as the kernel's `siphash()` computes it.

pub(crate) fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let mut k = [0u8; 8];
    k.copy_from_slice(&key[..8]);
    let k0 = u64::from_le_bytes(k);
    k.copy_from_slice(&key[8..]);
    let k1 = u64::from_le_bytes(k);
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut m = [0u8; 8];
        m.copy_from_slice(chunk);
        let m = u64::from_le_bytes(m);
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    let b = u64::from_le_bytes(last) | ((data.len() as u64 & 0xff) << 56);
    v[3] ^= b;
    round(&mut v);
    round(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference implementation's test vectors (`vectors.h` of SipHash): key
    /// 00..0f, messages 00, 00 01, 00 01 02, …
    #[test]
    fn reference_vectors() {
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let msg: Vec<u8> = (0..64u8).collect();
        assert_eq!(siphash24(&key, &msg[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(&key, &msg[..1]), 0x74f8_39c5_93dc_67fd);
        assert_eq!(siphash24(&key, &msg[..8]), 0x93f5_f579_9a93_2462);
        assert_eq!(siphash24(&key, &msg[..15]), 0xa129_ca61_49be_45e5);
    }
}
