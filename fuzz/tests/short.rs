//! The short fuzz run CI exercises: every target for 50 000 mutated inputs (plus a
//! round-trip check of a fresh valid value every 16), in this process. The long run is
//! `scripts/fuzz.sh` (10 million per target, and AFL++).

use gkfs_fuzz::engine::{fuzz, Config, Report};
use gkfs_fuzz::targets::{self, Counters, Target};

const EXECS: u64 = 50_000;

fn short(name: &str) -> Report {
    let t = targets::find(name).expect("target");
    let r = fuzz(t, Config::new(EXECS, 0x5eed));
    assert_eq!(r.execs, EXECS);
    assert_eq!(r.failed(), 0, "{name}: {:#?}", r.failures);
    // The mutations must not all be rejected at once, or the decoder's inner paths
    // were never exercised.
    assert!(
        r.accepted > EXECS / 100,
        "{name}: only {} of {EXECS} inputs accepted",
        r.accepted
    );
    r
}

#[test]
fn request() {
    let r = short("request");
    for k in &r.kinds[..r.kinds.len() - 1] {
        assert!(
            k.accepted > 0,
            "no {} request accepted: {:?}",
            k.name,
            r.kinds
        );
    }
    assert!(
        r.kinds.last().unwrap().reached > 0,
        "no unknown opcode tried"
    );
}

#[test]
fn reply() {
    let r = short("reply");
    assert!(r.kinds.iter().all(|k| k.accepted > 0), "{:?}", r.kinds);
}

#[test]
fn frame() {
    short("frame");
}

#[test]
fn handshake() {
    short("handshake");
}

#[test]
fn hosts() {
    short("hosts");
}

#[test]
fn record() {
    short("record");
}

#[test]
fn manifest() {
    short("manifest");
}

#[test]
fn every_target_is_run_here() {
    let names: Vec<_> = targets::all().iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "request",
            "reply",
            "frame",
            "handshake",
            "hosts",
            "record",
            "manifest"
        ]
    );
}

/// A decoder with a planted bug: the loop must find and count it, so a green run
/// above means something.
#[test]
fn a_planted_panic_is_found_and_counted() {
    fn buggy(data: &[u8], c: &mut Counters) {
        (targets::find("record").unwrap().run)(data, c);
        // Panics on any input whose first byte became 0xff or that was cut short.
        assert!(
            data.first() != Some(&0xff) && data.len() >= 8,
            "planted bug"
        );
    }
    static BUGGY: Target = Target {
        name: "buggy",
        about: "record with a planted panic",
        run: buggy,
        valid: |r, c| (targets::find("record").unwrap().valid)(r, c),
        dict: &[],
        kinds: Vec::new,
    };
    let r = fuzz(&BUGGY, Config::new(5_000, 1));
    assert!(r.crashes > 100, "{r:?}");
    assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
    assert!(r.failures[0].message.contains("planted bug"));
    assert_eq!(r.failures[0].count, r.crashes);
}
