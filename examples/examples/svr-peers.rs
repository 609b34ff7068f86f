//! Two SVR peers over UDP on loopback: certificates, signed key exchange, metadata keys,
//! then data packets (some deliberately replayed or tampered) and a manual metadata-key
//! regenerate. Prints a JSON summary.
//!
//! `cargo run -p examples --example svr-peers -- [ffdh4096|ecdh-p256|mlkem768-ffdh4096|mlkem768-ecdh-p256] [packets]`

use ssr_svr_crypto::kex::KexAlgorithm;

const USAGE: &str = "usage: svr-peers [ffdh4096|ecdh-p256|mlkem768-ffdh4096|mlkem768-ecdh-p256] \
     [packets (0..=10000000, default 1000)]";

/// Enough for minutes of loopback traffic; more is a typo, not a demo.
const MAX_PACKETS: u64 = 10_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() > 3 {
        return Err(format!("unexpected argument {:?}; {USAGE}", args[3]).into());
    }
    let alg = match args.get(1).map(String::as_str) {
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(a) => {
            KexAlgorithm::from_name(a).ok_or_else(|| format!("unknown algorithm {a:?}; {USAGE}"))?
        }
        None => KexAlgorithm::EcdhP256,
    };
    let packets: u64 = match args.get(2) {
        Some(s) => s
            .parse()
            .ok()
            .filter(|n| *n <= MAX_PACKETS)
            .ok_or_else(|| format!("packets: not a number in 0..={MAX_PACKETS}: {s:?}; {USAGE}"))?,
        None => 1000,
    };
    println!("{}", examples::svr::run(alg, packets)?);
    Ok(())
}
