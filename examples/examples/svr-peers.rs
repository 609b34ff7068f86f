//! Two SVR peers over UDP on loopback: certificates, signed key exchange, metadata keys,
//! then data packets (some deliberately replayed or tampered) and a manual metadata-key
//! regenerate. Prints a JSON summary.
//!
//! `cargo run -p examples --example svr-peers -- [ffdh4096|ecdh-p256|mlkem768-ffdh4096|mlkem768-ecdh-p256] [packets]`

use ssr_svr_crypto::kex::KexAlgorithm;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let alg = match args.get(1) {
        Some(a) => KexAlgorithm::from_name(a).ok_or_else(|| format!("unknown algorithm {a}"))?,
        None => KexAlgorithm::EcdhP256,
    };
    let packets: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    println!("{}", examples::svr::run(alg, packets)?);
    Ok(())
}
