//! `ssr bench packet --size N --seconds S`: packet protection throughput on this device.

use std::hint::black_box;
use std::time::{Duration, Instant};

use clap::Subcommand;
use ssr_svr_crypto::packet::{
    CbcHmacOpener, CbcHmacSealer, GcmSealer, LANES, gcm_sealed_len, sealed_len,
};
use ssr_svr_crypto::secret::PacketKeyMaterial;

use super::{CmdResult, Failure};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// SVR packet protection throughput (seal, open, GCM, batch seal) in MB/s.
    Packet {
        /// Packet payload size in bytes.
        #[arg(long, default_value_t = 1400)]
        size: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 1)]
        seconds: u64,
    },
}

fn rate(
    d: Duration,
    bytes: usize,
    mut f: impl FnMut() -> Result<(), ssr_svr_crypto::Error>,
) -> Result<f64, Failure> {
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < d {
        for _ in 0..16 {
            f().map_err(|e| Failure::general(format!("ssr bench: {e}")))?;
        }
        n += 16;
    }
    Ok(n as f64 * bytes as f64 / t.elapsed().as_secs_f64() / 1e6)
}

pub fn run(cmd: Cmd) -> CmdResult {
    let Cmd::Packet { size, seconds } = cmd;
    if size == 0 || size > 65_000 {
        return Err(Failure::usage("ssr bench packet: --size must be 1..=65000"));
    }
    if seconds == 0 || seconds > 600 {
        return Err(Failure::usage(
            "ssr bench packet: --seconds must be 1..=600",
        ));
    }
    let d = Duration::from_secs(seconds);
    // A fixed benchmark key: this measures speed, it protects nothing.
    let key = PacketKeyMaterial::from_bytes([0x42; 80]);
    let pt = vec![0x5a_u8; size];

    let mut sealer = CbcHmacSealer::new(&key);
    let mut out = vec![0u8; sealed_len(size)];
    let seal = rate(d, size, || {
        sealer.seal(black_box(&pt), &mut out).map(|_| ())
    })?;

    let mut s2 = CbcHmacSealer::new(&key);
    let mut pkts = Vec::with_capacity(1024);
    for _ in 0..1024 {
        let mut v = vec![0u8; sealed_len(size)];
        s2.seal(&pt, &mut v)
            .map_err(|e| Failure::general(format!("ssr bench: {e}")))?;
        pkts.push(v);
    }
    let mut plain = vec![0u8; size + 16];
    let mut opener = CbcHmacOpener::new(&key);
    let mut i = 0usize;
    let open = rate(d, size, || {
        if i == pkts.len() {
            i = 0;
            opener = CbcHmacOpener::new(&key);
        }
        let r = opener.open(black_box(&pkts[i]), &mut plain).map(|_| ());
        i += 1;
        r
    })?;

    let mut gs = GcmSealer::new(&key);
    let mut gout = vec![0u8; gcm_sealed_len(size)];
    let gcm = rate(d, size, || gs.seal(black_box(&pt), &mut gout).map(|_| ()))?;

    let pts: Vec<&[u8]> = (0..LANES).map(|_| &pt[..]).collect();
    let mut bufs: Vec<Vec<u8>> = (0..LANES).map(|_| vec![0u8; sealed_len(size)]).collect();
    let mut lens = [0usize; LANES];
    let mut bs = CbcHmacSealer::new(&key);
    let batch = rate(d, size * LANES, || {
        let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(|v| &mut v[..]).collect();
        bs.seal_batch(black_box(&pts), &mut outs, &mut lens)
    })?;

    println!("packet size {size} bytes, {seconds} s per measurement, one core");
    println!("seal  aes-256-cbc+hmac-sha384  {seal:>8.1} MB/s");
    println!("open  aes-256-cbc+hmac-sha384  {open:>8.1} MB/s");
    println!("seal  aes-256-gcm              {gcm:>8.1} MB/s");
    println!("seal  batch x{LANES} cbc+hmac       {batch:>8.1} MB/s");
    Ok(())
}
