//! Which paths belong to the file system: lexical resolution of the paths a program
//! passes to POSIX calls against the mount dir, the program's (virtual) working
//! directory and `*at` directory fds. Used by the preload library; pure, so tested here.

/// Where a path given to a POSIX call lands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Inside the file system: the path inside it ("/a/b").
    Gkfs(String),
    /// Outside it, and the caller's path can go to the kernel unchanged.
    Real,
    /// Outside it, but relative to a directory the kernel does not know (a gkfs working
    /// directory): this absolute path must go to the kernel instead.
    RealAbsolute(String),
}

/// A mount directory: an absolute, normalised path other than "/".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountDir {
    dir: String,
}

/// Normalises an absolute path lexically (see [`gkfs_proto::path::lexical`]); never
/// fails: length limits are the file system's business, not the classifier's.
pub fn lexical_normalize(path: &str) -> String {
    gkfs_proto::path::lexical(path)
}

impl MountDir {
    /// The mount dir `dir`; None unless it is absolute and not the root.
    pub fn new(dir: &str) -> Option<MountDir> {
        if !dir.starts_with('/') {
            return None;
        }
        let dir = lexical_normalize(dir);
        (dir != "/").then_some(MountDir { dir })
    }

    /// The mount dir as given to programs ("/tmp/gkfs").
    pub fn as_str(&self) -> &str {
        &self.dir
    }

    /// The path inside the file system of a normalised absolute path, if it is under
    /// the mount dir.
    pub fn inside(&self, abs: &str) -> Option<String> {
        let rest = abs.strip_prefix(self.dir.as_str())?;
        if rest.is_empty() {
            Some("/".into())
        } else if rest.starts_with('/') {
            Some(rest.to_string())
        } else {
            None
        }
    }

    /// The path programs see for a path inside the file system ("/a" -> "/tmp/gkfs/a").
    pub fn outside(&self, fs_path: &str) -> String {
        if fs_path == "/" {
            self.dir.clone()
        } else {
            format!("{}{}", self.dir, fs_path)
        }
    }

    /// Resolves `path` as a POSIX call sees it. `base` is the absolute directory a
    /// relative path starts from when the kernel cannot resolve it (a gkfs working
    /// directory or a gkfs directory fd); None means the kernel's own working directory.
    pub fn resolve(&self, base: Option<&str>, path: &str) -> Resolved {
        if path.is_empty() {
            return Resolved::Real;
        }
        if path.starts_with('/') {
            // Cheap reject before normalising: most paths a program touches are not ours.
            if !path.starts_with(self.dir.as_str())
                && !path.contains("/..")
                && !path.starts_with("//")
            {
                return Resolved::Real;
            }
            let abs = lexical_normalize(path);
            return match self.inside(&abs) {
                Some(p) => Resolved::Gkfs(p),
                // "/tmp/gkfs/../x": the kernel cannot walk through the mount dir (it
                // may not exist on disk), so it gets the normalised path.
                None if self
                    .inside(&lexical_normalize(
                        &path[..path.len().min(self.dir.len() + 1)],
                    ))
                    .is_some() =>
                {
                    Resolved::RealAbsolute(abs)
                }
                None => Resolved::Real,
            };
        }
        let Some(base) = base else {
            return Resolved::Real;
        };
        let abs = lexical_normalize(&format!("{base}/{path}"));
        match self.inside(&abs) {
            Some(p) => Resolved::Gkfs(p),
            None => Resolved::RealAbsolute(abs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        let m = MountDir::new("/tmp/gkfs/").unwrap();
        assert_eq!(m.as_str(), "/tmp/gkfs");
        assert!(MountDir::new("/").is_none() && MountDir::new("rel").is_none());
        let g = |s: &str| Resolved::Gkfs(s.to_string());
        assert_eq!(m.resolve(None, "/tmp/gkfs"), g("/"));
        assert_eq!(m.resolve(None, "/tmp/gkfs/"), g("/"));
        assert_eq!(m.resolve(None, "/tmp/gkfs/a//b/./c"), g("/a/b/c"));
        assert_eq!(m.resolve(None, "/tmp/gkfsx/a"), Resolved::Real);
        assert_eq!(
            m.resolve(None, "/tmp/gkfs/../etc"),
            Resolved::RealAbsolute("/tmp/etc".into())
        );
        assert_eq!(
            m.resolve(None, "/tmp/gkfs/.."),
            Resolved::RealAbsolute("/tmp".into())
        );
        assert_eq!(m.resolve(None, "/tmp/x/../gkfs/a"), g("/a"));
        assert_eq!(m.resolve(None, "//tmp/gkfs/a"), g("/a"));
        assert_eq!(m.resolve(None, "/etc/passwd"), Resolved::Real);
        assert_eq!(m.resolve(None, "a/b"), Resolved::Real);
        assert_eq!(m.resolve(None, ""), Resolved::Real);
        assert_eq!(m.resolve(Some("/tmp/gkfs/d"), "a/../b"), g("/d/b"));
        assert_eq!(m.resolve(Some("/tmp/gkfs"), "."), g("/"));
        assert_eq!(
            m.resolve(Some("/tmp/gkfs/d"), "../../x"),
            Resolved::RealAbsolute("/tmp/x".into())
        );
        assert_eq!(m.resolve(Some("/tmp/gkfs"), "/etc"), Resolved::Real);
        assert_eq!(m.outside("/"), "/tmp/gkfs");
        assert_eq!(m.outside("/a"), "/tmp/gkfs/a");
    }
}
