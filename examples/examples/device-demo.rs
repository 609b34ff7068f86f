//! The device demo on built-in defaults. Grows as capabilities land.

fn main() {
    println!("ssr device demo: no capability has landed yet.");
}
