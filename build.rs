//! Detects whether this crate is compiled with frame pointers, so stack capture can default to
//! a frame-pointer walk (nanoseconds) instead of DWARF unwinding (microseconds).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(allocscope_frame_pointers)");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let args: Vec<&str> = flags.split('\x1f').collect();
    let mut fp = false;
    for (i, a) in args.iter().enumerate() {
        let value = if let Some(v) = a.strip_prefix("-Cforce-frame-pointers=") {
            Some(v)
        } else if let Some(v) = a.strip_prefix("force-frame-pointers=") {
            (i > 0 && args[i - 1] == "-C").then_some(v)
        } else {
            None
        };
        if let Some(v) = value {
            fp = matches!(v, "yes" | "y" | "on" | "true" | "always");
        }
    }
    if fp {
        println!("cargo:rustc-cfg=allocscope_frame_pointers");
    }
}
