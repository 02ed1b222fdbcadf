//! `build.rs` recognises every spelling of `-C force-frame-pointers` that rustc accepts,
//! including a bare `-C force-frame-pointers` (no value means yes): a spelling it missed would
//! make such builds silently use DWARF unwinding.

#[path = "../build/flags.rs"]
mod flags;

use flags::frame_pointers;

#[test]
fn every_spelling_of_force_frame_pointers() {
    let yes: &[&[&str]] = &[
        &["-C", "force-frame-pointers"],
        &["-Cforce-frame-pointers"],
        &["-C", "force-frame-pointers=yes"],
        &["-Cforce-frame-pointers=on"],
        &["--codegen", "force-frame-pointers=true"],
        &["--codegen=force-frame-pointers"],
        &["-C", "opt-level=3", "-C", "force-frame-pointers=always"],
        &[
            "-C",
            "force-frame-pointers=no",
            "-C",
            "force-frame-pointers",
        ],
    ];
    for args in yes {
        assert!(frame_pointers(args), "{args:?}");
    }
    let no: &[&[&str]] = &[
        &[],
        &[""],
        &["-C", "force-frame-pointers=no"],
        &["-Cforce-frame-pointers=off"],
        &[
            "-C",
            "force-frame-pointers",
            "-C",
            "force-frame-pointers=false",
        ],
        &["-C", "opt-level=3"],
        &["force-frame-pointers"],
        &["-C", "target-cpu=native", "force-frame-pointers=yes"],
    ];
    for args in no {
        assert!(!frame_pointers(args), "{args:?}");
    }
}
