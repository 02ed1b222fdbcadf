//! Sets the crate's cfg aliases:
//! * `allocscope_frame_pointers`: compiled with frame pointers, so stack capture can default to
//!   a frame-pointer walk (nanoseconds) instead of DWARF unwinding (microseconds);
//! * `allocscope_cmalloc`: the `malloc` feature on a target it supports (64-bit Linux with
//!   glibc), where `src/cmalloc.rs` is compiled. Elsewhere the feature does nothing.

#[path = "build/flags.rs"]
mod flags;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(allocscope_frame_pointers)");
    println!("cargo::rustc-check-cfg=cfg(allocscope_cmalloc)");
    let target = |key: &str| std::env::var(format!("CARGO_CFG_TARGET_{key}")).unwrap_or_default();
    if std::env::var_os("CARGO_FEATURE_MALLOC").is_some()
        && target("OS") == "linux"
        && target("ENV") == "gnu"
        && target("POINTER_WIDTH") == "64"
    {
        println!("cargo::rustc-cfg=allocscope_cmalloc");
    }
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    println!("cargo:rerun-if-changed=build/flags.rs");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let args: Vec<&str> = flags.split('\x1f').collect();
    if flags::frame_pointers(&args) {
        println!("cargo::rustc-cfg=allocscope_frame_pointers");
    }
}
