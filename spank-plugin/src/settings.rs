//! Site settings (the arguments after the plugin's path in plugstack.conf). Pure code,
//! unit-tested.

use std::path::PathBuf;

/// Keys the plugin itself uses; every other `key=value` goes to `gkfs-run prolog|epilog`
/// as `--key=value` (`keyfile`, `port_base`, `port_range`, `provider`, `timeout`,
/// `stage_timeout`, `chunk_size`, `threads`, `gkfsd`, `metrics_port`, `summary`;
/// `mode=` becomes `--default-mode=`: how jobs without `--gkfs-mode` reach gkfs).
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
    /// `burst_buffer=yes`: jobs without --gkfs may ask for it with `#BB_LUA gkfs`
    /// directives (share/slurm/burst_buffer.lua); their job prolog asks slurmctld.
    pub burst_buffer: bool,
    /// Everything else, as `--key=value` arguments of gkfs-run.
    pub passthrough: Vec<String>,
}

fn yes_no(arg: &str, v: &str) -> Result<bool, String> {
    match v {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!("plugstack.conf {arg}: expected yes or no")),
    }
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
            burst_buffer: false,
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
                "job_scripts" => s.job_scripts = yes_no(&a, v)?,
                "burst_buffer" => s.burst_buffer = yes_no(&a, v)?,
                "mode" if crate::MODES.contains(&v) => {
                    s.passthrough.push(format!("--default-mode={v}"))
                }
                "mode" => {
                    return Err(format!(
                        "plugstack.conf {a}: expected one of {}",
                        crate::MODES.join(", ")
                    ))
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
        assert!(!s.burst_buffer);
        assert!(
            Settings::parse(args(&["burst_buffer=yes"]))
                .unwrap()
                .burst_buffer
        );
        assert!(Settings::parse(args(&["bogus=1"]))
            .unwrap_err()
            .contains("unknown key bogus"));
        assert!(Settings::parse(args(&["rootdir"])).is_err());
        assert!(Settings::parse(args(&["mountdir=rel"])).is_err());
    }

    #[test]
    fn mode_is_checked_and_passed_as_the_default() {
        let s = Settings::parse(args(&["mode=both"])).unwrap();
        assert_eq!(s.passthrough, args(&["--default-mode=both"]));
        let e = Settings::parse(args(&["mode=kernel"])).unwrap_err();
        assert!(e.contains("preload, fuse, both"), "{e}");
    }
}
