//! Builds the XDP programs of `../streamer-ebpf` for `bpfel-unknown-none` with
//! aya-build, into `$OUT_DIR/streamer-ebpf`, which `src/xdp.rs` embeds.
//!
//! That build runs `cargo build` on the nightly toolchain (`rustup run nightly`)
//! with `-Z build-std=core`, and links with `bpf-linker`: nightly, its `rust-src`
//! component and `bpf-linker` must be installed, which `scripts/setup` does. This
//! script checks for them first and says so when one is missing.
//!
//! `AYA_BUILD_SKIP=1` builds the appliance without its XDP programs (an empty
//! object is embedded and `streamer::xdp` reports it at load time), for machines
//! that only need the rest of the crate.

use std::{env, ffi::OsStr, fs, path::PathBuf, process::Command};

use anyhow::{bail, Context as _};

/// The eBPF crate, a sibling of this one, and the name of the object it builds.
const EBPF_PACKAGE: &str = "streamer-ebpf";
/// Where aya-build takes the toolchain from (`rustup run nightly`).
const TOOLCHAIN: &str = "nightly";
/// aya-build's own switch to skip the eBPF build.
const SKIP_ENV: &str = "AYA_BUILD_SKIP";
/// What to do when the eBPF toolchain is incomplete.
const SETUP_HINT: &str = "run scripts/setup to install it (nightly with rust-src, and \
     bpf-linker), or set AYA_BUILD_SKIP=1 to build streamer without its XDP programs";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let workspace = manifest_dir
        .parent()
        .context("streamer's manifest directory has no parent")?;
    let ebpf_dir = workspace.join(EBPF_PACKAGE);
    let object = out_dir.join(EBPF_PACKAGE);

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={SKIP_ENV}");
    // The programs read the wire format's constants and the map layout.
    for shared in ["src", "Cargo.toml"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join("streamer-common").join(shared).display()
        );
    }

    if skip_requested() {
        println!("cargo:warning={SKIP_ENV} is set: building streamer without its XDP programs");
        fs::write(&object, [])
            .with_context(|| format!("writing the empty eBPF object {}", object.display()))?;
        return Ok(());
    }

    let bpf_linker = check_toolchain()?;
    println!("cargo:rerun-if-changed={}", bpf_linker.display());

    // aya-build runs `cargo build --package streamer-ebpf` in the current
    // directory. streamer-ebpf is a workspace of its own (it is excluded from the
    // host workspace), so run that build from its folder, with its own lock file.
    env::set_current_dir(&ebpf_dir).with_context(|| format!("entering {}", ebpf_dir.display()))?;
    let root_dir = ebpf_dir
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .with_context(|| {
        format!("building the XDP programs in {root_dir} failed (see the warnings above); if the toolchain is incomplete, {SETUP_HINT}")
    })?;

    if !object.is_file() {
        bail!(
            "the eBPF build finished but left no {}; is `{EBPF_PACKAGE}` still the name of its binary target?",
            object.display()
        );
    }
    Ok(())
}

fn env_var(name: &str) -> anyhow::Result<std::ffi::OsString> {
    env::var_os(name).with_context(|| format!("{name} is not set; run this through cargo"))
}

/// Whether `AYA_BUILD_SKIP` asks to skip the eBPF build (aya-build's reading of it).
fn skip_requested() -> bool {
    env::var_os(SKIP_ENV)
        .is_some_and(|v| v == "1" || v.to_string_lossy().eq_ignore_ascii_case("true"))
}

/// Checks that the eBPF build can run: rustup with the nightly toolchain and its
/// `rust-src`, and `bpf-linker` on `PATH`. Returns `bpf-linker`'s path.
fn check_toolchain() -> anyhow::Result<PathBuf> {
    let sysroot = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"])
        .output();
    let sysroot = match sysroot {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        Ok(out) => bail!(
            "the {TOOLCHAIN} Rust toolchain, which builds the XDP programs, is not installed \
             ({}); {SETUP_HINT}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => bail!(
            "rustup, which runs the {TOOLCHAIN} toolchain for the XDP programs, could not be \
             run ({e}); {SETUP_HINT}"
        ),
    };
    let core_src = sysroot.join("lib/rustlib/src/rust/library/core");
    if !core_src.is_dir() {
        bail!(
            "the {TOOLCHAIN} toolchain has no rust-src component ({} is missing), which \
             `-Z build-std=core` needs for the XDP programs; {SETUP_HINT}",
            core_src.display()
        );
    }
    find_on_path(OsStr::new("bpf-linker")).with_context(|| {
        format!("bpf-linker, which links the XDP programs, is not on PATH; {SETUP_HINT}")
    })
}

/// The first executable file named `name` in a directory of `PATH`.
fn find_on_path(name: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
