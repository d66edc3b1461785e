//! Site settings (the arguments after the plugin's path in plugstack.conf) and the
//! checks of the users' `--gkfs-stage-in/out` lists. Pure code, unit-tested.

use std::path::{Path, PathBuf};

/// Keys the plugin itself uses; every other `key=value` goes to `gkfs-run prolog|epilog`
/// as `--key=value` (`keyfile`, `port_base`, `port_range`, `provider`, `timeout`,
/// `stage_timeout`, `chunk_size`, `threads`, `gkfsd`, `metrics_port`, `summary`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `gkfs_run=`: the launcher run by the job prolog/epilog.
    pub gkfs_run: PathBuf,
    /// `client_lib=`: the preload library put in the tasks' LD_PRELOAD.
    pub client_lib: PathBuf,
    /// `rootdir=`: node-local parent of each job's `gkfs-<jobid>` dir.
    pub rootdir: PathBuf,
    /// `mountdir=`: default mount dir of `--gkfs` without a value.
    pub mountdir: String,
    /// `job_scripts=no`: the site's Prolog/Epilog scripts run `gkfs-run prolog|epilog`
    /// (share/slurm), not the plugin's job prolog/epilog.
    pub job_scripts: bool,
    /// Everything else, as `--key=value` arguments of gkfs-run.
    pub passthrough: Vec<String>,
}

impl Settings {
    /// Parses plugstack.conf arguments.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Settings, String> {
        let mut s = Settings {
            gkfs_run: PathBuf::from("/usr/bin/gkfs-run"),
            client_lib: PathBuf::from("/usr/lib/gkfs/libgkfs_client.so"),
            rootdir: PathBuf::from("/tmp"),
            mountdir: "/tmp/gkfs".into(),
            job_scripts: true,
            passthrough: Vec::new(),
        };
        for a in args {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| format!("plugstack.conf argument {a:?}: expected key=value"))?;
            match k {
                "gkfs_run" => s.gkfs_run = v.into(),
                "client_lib" => s.client_lib = v.into(),
                "rootdir" => {
                    s.rootdir = v.into();
                    s.passthrough.push(format!("--rootdir={v}"));
                }
                "mountdir" => s.mountdir = v.trim_end_matches('/').to_string(),
                "job_scripts" => {
                    s.job_scripts = match v {
                        "yes" => true,
                        "no" => false,
                        _ => return Err(format!("plugstack.conf {a}: expected yes or no")),
                    }
                }
                "keyfile" | "port_base" | "port_range" | "provider" | "timeout"
                | "stage_timeout" | "chunk_size" | "threads" | "gkfsd" | "metrics_port"
                | "summary" => s.passthrough.push(format!("--{}={v}", k.replace('_', "-"))),
                _ => return Err(format!("plugstack.conf argument {a:?}: unknown key {k}")),
            }
        }
        if !s.mountdir.starts_with('/') {
            return Err(format!(
                "plugstack.conf mountdir={}: not absolute",
                s.mountdir
            ));
        }
        Ok(s)
    }

    /// The node-local dir of job `id`.
    pub fn job_dir(&self, id: u32) -> PathBuf {
        self.rootdir.join(format!("gkfs-{id}"))
    }
}

/// Which way a stage list goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Way {
    /// PFS → gkfs: DST under the mount dir.
    In,
    /// gkfs → PFS: SRC under the mount dir.
    Out,
}

fn under(path: &str, mountdir: &str) -> bool {
    path == mountdir
        || path
            .strip_prefix(mountdir)
            .is_some_and(|r| r.starts_with('/'))
}

/// Checks `SRC:DST[,SRC:DST...]` and makes the parallel-file-system side absolute
/// against `cwd` (the prolog/epilog run elsewhere).
pub fn check_stage_list(
    list: &str,
    way: Way,
    mountdir: &str,
    cwd: &Path,
) -> Result<String, String> {
    let opt = match way {
        Way::In => "--gkfs-stage-in",
        Way::Out => "--gkfs-stage-out",
    };
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

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn settings_defaults_and_passthrough() {
        let s = Settings::parse(args(&[
            "gkfs_run=/opt/gkfs/bin/gkfs-run",
            "rootdir=/local",
            "mountdir=/gkfs/",
            "port_base=50000",
            "keyfile=/etc/gkfs.key",
        ]))
        .unwrap();
        assert_eq!(s.gkfs_run, PathBuf::from("/opt/gkfs/bin/gkfs-run"));
        assert_eq!(s.mountdir, "/gkfs");
        assert_eq!(s.job_dir(12), PathBuf::from("/local/gkfs-12"));
        assert_eq!(
            s.passthrough,
            args(&[
                "--rootdir=/local",
                "--port-base=50000",
                "--keyfile=/etc/gkfs.key"
            ])
        );
        assert!(s.job_scripts);
        assert!(
            !Settings::parse(args(&["job_scripts=no"]))
                .unwrap()
                .job_scripts
        );
        assert!(Settings::parse(args(&["job_scripts=0"])).is_err());
        assert!(Settings::parse(args(&["bogus=1"]))
            .unwrap_err()
            .contains("unknown key bogus"));
        assert!(Settings::parse(args(&["rootdir"])).is_err());
        assert!(Settings::parse(args(&["mountdir=rel"])).is_err());
    }

    #[test]
    fn stage_lists() {
        let cwd = Path::new("/home/u/run");
        assert_eq!(
            check_stage_list(
                "in:/tmp/gkfs/in,/data/x:/tmp/gkfs",
                Way::In,
                "/tmp/gkfs",
                cwd
            )
            .unwrap(),
            "/home/u/run/in:/tmp/gkfs/in,/data/x:/tmp/gkfs"
        );
        assert_eq!(
            check_stage_list("/tmp/gkfs/out:results", Way::Out, "/tmp/gkfs", cwd).unwrap(),
            "/tmp/gkfs/out:/home/u/run/results"
        );
        assert!(check_stage_list("in:/tmp/gkfsx/in", Way::In, "/tmp/gkfs", cwd).is_err());
        assert!(check_stage_list("/tmp/gkfs/o:/x", Way::In, "/tmp/gkfs", cwd).is_err());
        assert!(check_stage_list("nocolon", Way::Out, "/tmp/gkfs", cwd).is_err());
        assert!(check_stage_list(":/tmp/gkfs/a", Way::In, "/tmp/gkfs", cwd).is_err());
    }
}
