//! Paths inside the file system: absolute, normalised ("/a/b", root "/"), at most
//! [`MAX_PATH`] bytes with components of at most [`MAX_NAME`] bytes.

use crate::errno::Errno;

/// Longest path, in bytes (Linux `PATH_MAX` less the terminating NUL).
pub const MAX_PATH: usize = 4095;
/// Longest component, in bytes (Linux `NAME_MAX`).
pub const MAX_NAME: usize = 255;

/// Where a file unlinked while a process still has it open lives on, nameless to
/// programs, until that process closes it (hidden from listings of the root, never
/// staged out; removed with the file system at the end of the job if its process was
/// killed first).
pub const UNLINKED_DIR: &str = "/.gkfs-unlinked";

/// Where the inode records of hard-linked files live (see
/// [`crate::record::Record::LINKED`]); hidden like [`UNLINKED_DIR`].
pub const INODES_DIR: &str = "/.gkfs-inodes";

/// Directories of the root that programs never see (listings leave them out).
pub const HIDDEN_DIRS: [&str; 2] = [UNLINKED_DIR, INODES_DIR];

/// The inode record of the hard-linked file `file_id`.
pub fn inode_path(file_id: u64) -> String {
    format!("{INODES_DIR}/{file_id:016x}")
}

/// Checks that `path` is a normalised absolute path within the limits.
pub fn validate(path: &str) -> Result<(), Errno> {
    if path.len() > MAX_PATH {
        return Err(Errno::ENAMETOOLONG);
    }
    if path == "/" {
        return Ok(());
    }
    if !path.starts_with('/') || path.ends_with('/') {
        return Err(Errno::EINVAL);
    }
    for c in path[1..].split('/') {
        if c.is_empty() || c == "." || c == ".." || c.contains('\0') {
            return Err(Errno::EINVAL);
        }
        if c.len() > MAX_NAME {
            return Err(Errno::ENAMETOOLONG);
        }
    }
    Ok(())
}

/// The parent of a normalised path ("/" for "/" and for "/a").
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of a normalised path ("" for "/").
pub fn name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// Joins a normalised directory path and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Is `path` equal to `dir` or below it?
pub fn is_within(path: &str, dir: &str) -> bool {
    dir == "/"
        || path == dir
        || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// Where `path` is after a rename of `from` to `to`: None unless it is `from` or below.
pub fn moved(path: &str, from: &str, to: &str) -> Option<String> {
    (from != "/" && is_within(path, from)).then(|| format!("{to}{}", &path[from.len()..]))
}

/// Normalises `path` (absolute) lexically: drops empty and "." components and
/// resolves ".." (never above the root). Errors on over-long results.
pub fn normalize(path: &str) -> Result<String, Errno> {
    if !path.starts_with('/') {
        return Err(Errno::EINVAL);
    }
    let out = lexical(path);
    validate(&out)?;
    Ok(out)
}

/// The lexical normal form of an absolute path, without length checks: empty and "."
/// components dropped, ".." resolved (never above the root).
pub fn lexical(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return "/".into();
    }
    let mut s = String::with_capacity(path.len());
    for p in parts {
        s.push('/');
        s.push_str(p);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_and_helpers() {
        assert!(validate("/").is_ok());
        assert!(validate("/a/b").is_ok());
        for bad in ["", "a", "/a/", "//a", "/a/./b", "/a/../b"] {
            assert_eq!(validate(bad), Err(Errno::EINVAL), "{bad}");
        }
        assert_eq!(
            validate(&format!("/{}", "x".repeat(256))),
            Err(Errno::ENAMETOOLONG)
        );
        assert_eq!(validate(&"/x".repeat(2100)), Err(Errno::ENAMETOOLONG));
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(name("/a/b"), "b");
        assert_eq!(join("/", "a"), "/a");
        assert!(is_within("/a/b", "/a") && !is_within("/ab", "/a") && is_within("/a", "/a"));
        assert_eq!(normalize("//a/./b/../c/").unwrap(), "/a/c");
        assert_eq!(normalize("/..").unwrap(), "/");
    }

    #[test]
    fn moved_follows_a_rename_of_the_path_or_a_parent() {
        assert_eq!(moved("/a/b", "/a", "/x/y").as_deref(), Some("/x/y/b"));
        assert_eq!(moved("/a", "/a", "/x").as_deref(), Some("/x"));
        assert_eq!(moved("/ab", "/a", "/x"), None);
        assert_eq!(moved("/a", "/", "/x"), None);
    }
}
