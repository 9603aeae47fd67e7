//! Links `calico-ipam` as a position-dependent executable on Linux.
//!
//! The runtime starts the plugin once for every pod's ADD and DEL, so its
//! start-up is paid per pod. A position-independent executable (rustc's
//! default) carries about 29 000 relative relocations, which the dynamic
//! loader applies at every start, copying each page it patches; linked
//! position-dependent there are none. Measured on the shared 2-core
//! machine (`perf stat -r 300 env CNI_COMMAND=VERSION calico-ipam`,
//! BENCHMARKS.md, "calico-ipam start-up"): page faults 304 → 175, elapsed
//! 2.72 → 1.96 ms. The cost is that the executable's own image is not
//! randomised (ASLR still places the stack, heap and libraries), as for
//! Debian's CNI plugins (`file /usr/lib/cni/host-local`: "LSB executable",
//! Go's default build mode). Only the plugin binary is linked this way:
//! ipam-server is long-lived and keeps the default. README's install
//! command goes further, linking it statically (`cargo rustc ... -C
//! target-feature=+crt-static -C relocation-model=static`), which a build
//! script cannot ask for: `crt-static` changes how rustc links, not just
//! the linker's arguments.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        println!("cargo:rustc-link-arg-bin=calico-ipam=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
