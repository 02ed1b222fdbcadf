//! Detects whether this crate is compiled with frame pointers, so stack capture can default to
//! a frame-pointer walk (nanoseconds) instead of DWARF unwinding (microseconds).

#[path = "build/flags.rs"]
mod flags;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(allocscope_frame_pointers)");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    println!("cargo:rerun-if-changed=build/flags.rs");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let args: Vec<&str> = flags.split('\x1f').collect();
    if flags::frame_pointers(&args) {
        println!("cargo:rustc-cfg=allocscope_frame_pointers");
    }
}
