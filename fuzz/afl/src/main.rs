//! AFL++ harness: `GKFS_FUZZ_TARGET=<target> cargo afl fuzz -i SEEDS -o OUT -- <this>`.
//! Runs the same target functions as the mutation loop (`gkfs-fuzz run`), in AFL's
//! persistent mode; a panic in a target becomes an abort, which AFL saves as a crash.

fn main() {
    let name = std::env::var("GKFS_FUZZ_TARGET").unwrap_or_default();
    let Some(t) = gkfs_fuzz::targets::find(&name) else {
        let names: Vec<_> = gkfs_fuzz::targets::all().iter().map(|t| t.name).collect();
        eprintln!(
            "gkfs-fuzz-afl: set GKFS_FUZZ_TARGET to one of {}",
            names.join(", ")
        );
        std::process::exit(2);
    };
    let kinds = (t.kinds)().len();
    afl::fuzz!(|data: &[u8]| {
        let mut c = gkfs_fuzz::targets::Counters::new(kinds);
        (t.run)(data, &mut c);
    });
}
