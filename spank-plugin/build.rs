//! Takes SLURM_VERSION_NUMBER from the installed <slurm/slurm_version.h>: Slurm's plugin
//! loader refuses a plugin built for another major.minor release.
fn main() {
    let hdr = std::env::var("SLURM_VERSION_H")
        .unwrap_or_else(|_| "/usr/include/slurm/slurm_version.h".into());
    println!("cargo:rerun-if-changed={hdr}");
    println!("cargo:rerun-if-env-changed=SLURM_VERSION_H");
    let version = std::fs::read_to_string(&hdr).ok().and_then(|text| {
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix("#define SLURM_VERSION_NUMBER"))?;
        u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok()
    });
    let version = version.unwrap_or_else(|| {
        println!(
            "cargo:warning={hdr} not found (apt-get install libslurm-dev): the SPANK plugin is \
             built with Slurm version 0 and Slurm will refuse to load it"
        );
        0
    });
    println!("cargo:rustc-env=GKFS_SLURM_VERSION_NUMBER={version}");
}
