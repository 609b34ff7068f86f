//! Two SVR peers over UDP on loopback: certificates, signed key exchange, metadata keys,
//! then data packets (some deliberately replayed or tampered) and a manual metadata-key
//! regenerate. Prints a JSON summary.
//!
//! `cargo run -p examples --example svr-peers -- [ffdh4096|ecdh-p256|mlkem768-ffdh4096|mlkem768-ecdh-p256] [packets]`

use ssr_svr_crypto::kex::KexAlgorithm;

const USAGE: &str =
    "usage: svr-peers [ffdh4096|ecdh-p256|mlkem768-ffdh4096|mlkem768-ecdh-p256] [packets]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
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
            .map_err(|_| format!("packets: not a number: {s:?}; {USAGE}"))?,
        None => 1000,
    };
    println!("{}", examples::svr::run(alg, packets)?);
    Ok(())
}
