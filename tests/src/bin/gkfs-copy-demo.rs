//! gkfs-copy-demo: copies a local directory tree into the gkfs instance named by
//! LIBGKFS_HOSTS_FILE, lists it, copies it back out to a second local directory and
//! compares every file. Used by scripts/demo.sh to show data going in and out.
//!
//! Usage: gkfs-copy-demo SRC_DIR OUT_DIR

use std::fs;
use std::path::Path;

use gkfs_client::{Client, OpenOptions};

fn copy_in(client: &Client, src: &Path, dst: &str, files: &mut u64, bytes: &mut u64) {
    client
        .mkdir(dst, 0o755)
        .unwrap_or_else(|e| panic!("mkdir {dst}: {e}"));
    let mut entries: Vec<_> = fs::read_dir(src)
        .expect("read source dir")
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let target = format!("{dst}/{name}");
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_in(client, &e.path(), &target, files, bytes);
        } else if ft.is_file() {
            let data = fs::read(e.path()).unwrap();
            let f = client
                .open(
                    &target,
                    &OpenOptions {
                        create: true,
                        write: true,
                        exclusive: true,
                        mode: 0o644,
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|err| panic!("create {target}: {err}"));
            f.pwrite(&data, 0).unwrap();
            *files += 1;
            *bytes += data.len() as u64;
        }
    }
}

fn copy_out(client: &Client, src: &str, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in client.readdir(src).unwrap() {
        let from = format!("{src}/{}", e.name);
        let to = dst.join(&e.name);
        if e.mode & 0o170000 == 0o040000 {
            copy_out(client, &from, &to);
        } else {
            let f = client.open(&from, &OpenOptions::default()).unwrap();
            let mut buf = vec![0u8; f.size().unwrap() as usize];
            let n = f.pread(&mut buf, 0).unwrap();
            fs::write(&to, &buf[..n]).unwrap();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: gkfs-copy-demo SRC_DIR OUT_DIR  (with LIBGKFS_HOSTS_FILE set)");
        std::process::exit(2);
    }
    let client = Client::from_env().unwrap_or_else(|e| {
        eprintln!("gkfs-copy-demo: {e}");
        std::process::exit(1)
    });
    let (mut files, mut bytes) = (0, 0);
    let t = std::time::Instant::now();
    copy_in(
        &client,
        Path::new(&args[1]),
        "/demo",
        &mut files,
        &mut bytes,
    );
    println!(
        "copied {files} files ({bytes} bytes) into gkfs:/demo in {:?}",
        t.elapsed()
    );
    for e in client.readdir("/demo").unwrap() {
        println!(
            "  gkfs:/demo/{:<24} {:>8} bytes  mode {:o}",
            e.name, e.size, e.mode
        );
    }
    copy_out(&client, "/demo", Path::new(&args[2]));
    println!("copied gkfs:/demo back out to {}", args[2]);
}
