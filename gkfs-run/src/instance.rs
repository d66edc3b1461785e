//! An instance: the private directory (mode 0700) that holds one file system's hosts
//! file, token, daemon logs, pids and settings.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gkfs_proto::config::{HOSTS_FILE_NAME, TOKEN_FILE_NAME};
use serde::{Deserialize, Serialize};

use crate::supervise::Undo;

/// Name of the settings file inside an instance directory.
pub const INSTANCE_FILE: &str = "instance.json";
/// Name of the client environment file inside an instance directory.
pub const ENV_FILE: &str = "env";

/// One daemon started by this instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// Index in start order.
    pub index: usize,
    /// Process id.
    pub pid: u32,
    /// Its root directory.
    pub rootdir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

/// What `start` recorded for `status` and `stop`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    /// The instance directory.
    pub dir: PathBuf,
    /// Mount directory.
    pub mountdir: String,
    /// Provider.
    pub provider: String,
    /// Chunk size.
    pub chunk_size: u64,
    /// The daemons.
    pub daemons: Vec<DaemonInfo>,
    /// The parent of the root dirs, if `start` created it (then `stop` removes it).
    #[serde(default)]
    pub created_root: Option<PathBuf>,
    /// Directories `start` created above the root dirs' parent and the instance dir
    /// (`mkdir -p`), outermost first; `stop` removes those that are empty.
    #[serde(default)]
    pub created_parents: Vec<PathBuf>,
    /// Set when the daemons run on the nodes of a Slurm allocation.
    #[serde(default)]
    pub slurm: Option<crate::slurm::SlurmInfo>,
}

impl Instance {
    /// The hosts file.
    pub fn hosts_file(&self) -> PathBuf {
        self.dir.join(HOSTS_FILE_NAME)
    }

    /// Saves the settings.
    pub fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        write_private(&self.dir.join(INSTANCE_FILE), text.as_bytes())
    }

    /// Loads the instance that owns `hosts_file` (its directory).
    pub fn load_for(hosts_file: &Path) -> Result<Instance> {
        let dir = hosts_file.parent().unwrap_or(Path::new("."));
        let path = dir.join(INSTANCE_FILE);
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "{} has no {INSTANCE_FILE}: is {} a hosts file written by `gkfs-run start`?",
                dir.display(),
                hosts_file.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is malformed", path.display()))
    }
}

/// Creates a private (0700) directory, parents included.
pub fn make_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Creates a new instance directory with a fresh token and an empty hosts file: `dir`,
/// or a new one under $TMPDIR. Everything it makes is recorded in `undo` (a directory
/// that existed before is left, only what appears in it is the start-up's). Returns the
/// directory (canonical) and the parent directories it had to create, outermost first.
pub fn create_dir(dir: Option<&Path>, undo: &mut Undo) -> Result<(PathBuf, Vec<PathBuf>)> {
    let dir = match dir {
        Some(d) => {
            if d.join(HOSTS_FILE_NAME).exists() {
                anyhow::bail!("{} already holds an instance (stop it first, or choose another --instance-dir)", d.display());
            }
            std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf())
        }
        None => {
            let base = std::env::temp_dir();
            let user = nix::unistd::getuid().as_raw();
            let tag: u32 = rand::random();
            base.join(format!("gkfs-{user}-{tag:08x}"))
        }
    };
    let mut made = undo.create_dirs(&dir, true)?;
    if made.pop_if(|d| *d == dir).is_none() {
        undo.new_entries_of(&dir);
    }
    let token: u128 = rand::random();
    write_private(
        &dir.join(TOKEN_FILE_NAME),
        gkfs_proto::config::format_token(token).as_bytes(),
    )?;
    write_private(
        &dir.join(HOSTS_FILE_NAME),
        b"# gkfs hosts file: <hostname> <provider> <address-hex> key=value... (see gkfs-proto hosts docs)\n",
    )?;
    let canonical = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    Ok((canonical, made))
}
