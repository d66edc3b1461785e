//! `libgkfs_client.so`: the LD_PRELOAD library through which unmodified programs use
//! gkfs. See README.md for the design; each module documents its part:
//! `table` (every intercepted entry point, in one table), `hook` (the interception
//! machinery), `state` (lazy process state), `fds`
//! (descriptors), `paths` (classifying path arguments), and the hook groups
//! `file`, `meta`, `dir`, `stdio`, `exec`, `mmap`, `own` (the library's own descriptors),
//! `pages` (the memory of open file descriptions) and `vfork`.
//!
//! Loading the library does nothing but read two environment variables (the state a
//! parent handed over across exec); the hosts file is read when a path could be ours,
//! the connection opens on the first gkfs operation.

#![recursion_limit = "512"]

mod afterfork;
mod dir;
mod exec;
mod fds;
mod file;
mod handover;
mod hook;
mod internal;
mod locks;
mod log;
mod meta;
mod mmap;
mod orphans;
mod own;
mod pages;
mod paths;
mod state;
mod stdio;
mod table;
mod vfork;

extern "C" fn on_load() {
    let _inside = hook::Inside::enter();
    // A panic inside the library becomes EIO for the call (hook::run); its message
    // goes to the library's log, never to the program's stderr. (This is the
    // library's own copy of std: the program's panic hook, if any, is untouched.)
    std::panic::set_hook(Box::new(|info| {
        log::error(format_args!(
            "internal error (the call failed with EIO): {info}"
        ));
    }));
    state::set_owner();
    let _ = std::panic::catch_unwind(exec::inherit);
}

/// Runs [`on_load`] when the library is loaded.
#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;
