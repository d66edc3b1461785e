//! Stage lists (`SRC:DST[,SRC:DST...]`) as users give them (`--gkfs-stage-in/out`,
//! `#BB_LUA gkfs stage_in=/stage_out=`): checked and made absolute. Pure code, shared
//! by gkfs-run and, as source (it has no dependencies), the SPANK plugin.

use std::path::Path;

/// Which way a stage list goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Way {
    /// PFS → gkfs: DST under the mount dir.
    In,
    /// gkfs → PFS: SRC under the mount dir.
    Out,
}

/// Is `path` the mount dir or below it?
pub fn under(path: &str, mountdir: &str) -> bool {
    path == mountdir
        || path
            .strip_prefix(mountdir)
            .is_some_and(|r| r.starts_with('/'))
}

/// Checks `SRC:DST[,SRC:DST...]` and makes the parallel-file-system side absolute
/// against `cwd` (the prolog/epilog run elsewhere); errors name the list as `opt`
/// (`--gkfs-stage-in`, `#BB_LUA gkfs stage_in`).
pub fn check_stage_list(
    list: &str,
    way: Way,
    mountdir: &str,
    cwd: &Path,
    opt: &str,
) -> Result<String, String> {
    let mut out = Vec::new();
    for spec in list.split(',') {
        let (src, dst) = spec
            .split_once(':')
            .filter(|(s, d)| !s.is_empty() && !d.is_empty())
            .ok_or_else(|| format!("{opt}={list}: {spec:?} is not SRC:DST"))?;
        let (inside, outside) = match way {
            Way::In => (dst, src),
            Way::Out => (src, dst),
        };
        if !under(inside.trim_end_matches('/'), mountdir) {
            return Err(format!(
                "{opt}={list}: {inside} is not under the gkfs mount dir {mountdir}"
            ));
        }
        let outside = if outside.starts_with('/') {
            outside.to_string()
        } else {
            cwd.join(outside).display().to_string()
        };
        if outside.contains([',', ':']) {
            return Err(format!("{opt}: {outside} contains ',' or ':'"));
        }
        out.push(match way {
            Way::In => format!("{outside}:{inside}"),
            Way::Out => format!("{inside}:{outside}"),
        });
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_lists() {
        let cwd = Path::new("/home/u/run");
        assert_eq!(
            check_stage_list(
                "in:/tmp/gkfs/in,/data/x:/tmp/gkfs",
                Way::In,
                "/tmp/gkfs",
                cwd,
                "--gkfs-stage-in"
            )
            .unwrap(),
            "/home/u/run/in:/tmp/gkfs/in,/data/x:/tmp/gkfs"
        );
        assert_eq!(
            check_stage_list("/tmp/gkfs/out:results", Way::Out, "/tmp/gkfs", cwd, "x").unwrap(),
            "/tmp/gkfs/out:/home/u/run/results"
        );
        assert!(check_stage_list("in:/tmp/gkfsx/in", Way::In, "/tmp/gkfs", cwd, "x").is_err());
        assert!(check_stage_list("/tmp/gkfs/o:/x", Way::In, "/tmp/gkfs", cwd, "x").is_err());
        assert!(check_stage_list("nocolon", Way::Out, "/tmp/gkfs", cwd, "x").is_err());
        assert!(check_stage_list(":/tmp/gkfs/a", Way::In, "/tmp/gkfs", cwd, "x").is_err());
    }
}
