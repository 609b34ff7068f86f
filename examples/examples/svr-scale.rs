//! One router's SVR state machines against many simulated peers for two virtual days
//! (`examples::svr_scale`): memory per peer, router time per simulated day of rekeys,
//! peak key exchanges per second, failed packets (must be 0). Prints JSON.
//!
//! `cargo run --release -p examples --example svr-scale -- [peers (default 10000)] [hours (default 48)] [rekey-hours (default 24)]`
//!
//! ECDH P-256 key exchanges (the default algorithm; FFDH-4096 would make a 10,000-peer
//! run take hours of real time without changing what is measured about the state machines).

use examples::svr_scale::{ScaleConfig, run};

const USAGE: &str = "usage: svr-scale [peers (1..=100000, default 10000)] [hours (1..=720, default 48)] \
     [rekey-hours (1..=720, default 24)]";

fn arg(args: &[String], i: usize, max: u64, default: u64, name: &str) -> Result<u64, String> {
    match args.get(i) {
        None => Ok(default),
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|v| (1..=max).contains(v))
            .ok_or_else(|| format!("{name}: not a number in 1..={max}: {s:?}; {USAGE}")),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    if args.len() > 4 {
        return Err(format!("unexpected argument {:?}; {USAGE}", args[4]).into());
    }
    let cfg = ScaleConfig {
        peers: arg(&args, 1, 100_000, 10_000, "peers")? as usize,
        hours: arg(&args, 2, 720, 48, "hours")?,
        rekey_hours: arg(&args, 3, 720, 24, "rekey-hours")? as u16,
        ..ScaleConfig::default()
    };
    let rep = run(&cfg)?;
    println!("{}", serde_json::to_string_pretty(&rep.to_json())?);
    if rep.packets_failed != 0 || rep.not_in_service != 0 {
        return Err("packets failed or peerings out of service".into());
    }
    Ok(())
}
