//! The part of `<slurm/spank.h>` (Slurm 22.05) the plugin uses. The functions are not
//! linked at build time: they are looked up in libslurmfull, which every process that
//! loads SPANK plugins (srun, sbatch, salloc, slurmstepd) already has. The enum values
//! are checked against the installed header by a unit test.
#![allow(non_camel_case_types, non_upper_case_globals)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};

/// Opaque handle Slurm passes to every callback.
pub type spank_t = *mut c_void;

/// `spank_opt_cb_f`: called when the user gives the option.
pub type spank_opt_cb_f = Option<unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int>;

/// `struct spank_option`.
#[repr(C)]
pub struct spank_option {
    /// Long option name, without the dashes.
    pub name: *const c_char,
    /// Name of the argument in `--help`.
    pub arginfo: *const c_char,
    /// Help text.
    pub usage: *const c_char,
    /// 0: no argument, 1: required, 2: optional (`--opt=value`).
    pub has_arg: c_int,
    /// Passed to the callback.
    pub val: c_int,
    /// Callback.
    pub cb: spank_opt_cb_f,
}

/// `ESPANK_SUCCESS`.
pub const ESPANK_SUCCESS: c_int = 0;
/// `S_JOB_ID` (`uint32_t *`).
pub const S_JOB_ID: c_int = 2;
/// `S_CTX_LOCAL`: srun.
pub const S_CTX_LOCAL: c_int = 1;
/// `S_CTX_REMOTE`: slurmstepd.
pub const S_CTX_REMOTE: c_int = 2;
/// `S_CTX_ALLOCATOR`: sbatch, salloc.
pub const S_CTX_ALLOCATOR: c_int = 3;
/// `S_CTX_JOB_SCRIPT`: the job prolog/epilog run by slurmd.
pub const S_CTX_JOB_SCRIPT: c_int = 5;

/// Returned when a Slurm function is not in the process (not loaded by Slurm).
pub const ESPANK_ERROR: c_int = 3000;

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

/// Address of a Slurm function in this process (RTLD_DEFAULT is NULL in glibc). Found at
/// run time rather than left undefined at link time, so the unit tests link.
fn lookup(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads.
    let p = unsafe { dlsym(std::ptr::null_mut(), name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// Declares safe-to-call wrappers that look each Slurm function up by name.
macro_rules! slurm_fn {
    ($name:ident($($arg:ident: $ty:ty),*) -> c_int) => {
        /// Calls Slurm's function of the same name (ESPANK_ERROR when absent).
        ///
        /// # Safety
        /// The arguments must be valid for the C function.
        pub unsafe fn $name($($arg: $ty),*) -> c_int {
            let Some(p) = lookup(&CString::new(stringify!($name)).unwrap_or_default()) else {
                return ESPANK_ERROR;
            };
            // SAFETY: the symbol is Slurm's function with this C signature (spank.h).
            let f: unsafe extern "C" fn($($ty),*) -> c_int = unsafe { std::mem::transmute(p) };
            // SAFETY: the caller passes valid arguments.
            unsafe { f($($arg),*) }
        }
    };
}

slurm_fn!(spank_option_register(sp: spank_t, opt: *const spank_option) -> c_int);
slurm_fn!(spank_setenv(sp: spank_t, var: *const c_char, val: *const c_char, overwrite: c_int) -> c_int);
slurm_fn!(spank_getenv(sp: spank_t, var: *const c_char, buf: *mut c_char, len: c_int) -> c_int);
slurm_fn!(spank_job_control_setenv(sp: spank_t, var: *const c_char, val: *const c_char, overwrite: c_int) -> c_int);
slurm_fn!(spank_context() -> c_int);

/// `spank_get_item(sp, S_JOB_ID, &id)`.
pub fn job_id(sp: spank_t) -> Option<u32> {
    let p = lookup(c"spank_get_item")?;
    // SAFETY: spank_get_item(spank_t, spank_item_t, ...) -> spank_err_t (spank.h).
    let f: unsafe extern "C" fn(spank_t, c_int, ...) -> c_int = unsafe { std::mem::transmute(p) };
    let mut id: u32 = 0;
    // SAFETY: S_JOB_ID takes a `uint32_t *`.
    (unsafe { f(sp, S_JOB_ID, &mut id as *mut u32) } == ESPANK_SUCCESS).then_some(id)
}

/// Logs through Slurm's `slurm_info` (`error`: `slurm_error`), else to stderr.
pub fn log(error: bool, msg: &str) {
    let name = if error { c"slurm_error" } else { c"slurm_info" };
    let Some(p) = lookup(name) else {
        eprintln!("gkfs: {msg}");
        return;
    };
    // SAFETY: slurm_info/slurm_error(const char *fmt, ...) (log.h).
    let f: unsafe extern "C" fn(*const c_char, ...) = unsafe { std::mem::transmute(p) };
    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: a constant "%s" format with one NUL-terminated string argument.
    unsafe { f(c"gkfs: %s".as_ptr(), msg.as_ptr()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constants above against the installed header (libslurm-dev), compiled by gcc.
    #[test]
    fn constants_match_spank_h() {
        let hdr = std::path::Path::new("/usr/include/slurm/spank.h");
        if !hdr.exists() {
            // As gkfs_tests::skip (this crate has no dependencies): a failure under CI.
            let why = "/usr/include/slurm/spank.h missing (apt-get install libslurm-dev)";
            assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{why}");
            eprintln!("SKIPPED constants_match_spank_h: {why}");
            if let Some(log) = std::env::var_os("GKFS_SKIP_LOG") {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap();
                writeln!(f, "constants_match_spank_h: {why}").unwrap();
            }
            return;
        }
        let dir = std::env::temp_dir().join(format!("gkfs-spank-h-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("probe.c");
        std::fs::write(
            &src,
            "#include <stdint.h>\n#include <stdio.h>\n#include <slurm/spank.h>\n\
             int main(void){printf(\"%d %d %d %d %d %d %d %zu\\n\", ESPANK_SUCCESS, ESPANK_ERROR, \
             S_JOB_ID, S_CTX_LOCAL, S_CTX_REMOTE, S_CTX_ALLOCATOR, S_CTX_JOB_SCRIPT, \
             sizeof(struct spank_option));return 0;}\n",
        )
        .unwrap();
        let exe = dir.join("probe");
        let st = std::process::Command::new("gcc")
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .status()
            .expect("gcc (apt-get install gcc)");
        assert!(st.success());
        let out = std::process::Command::new(&exe).output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let ours = format!(
            "{ESPANK_SUCCESS} {ESPANK_ERROR} {S_JOB_ID} {S_CTX_LOCAL} {S_CTX_REMOTE} \
             {S_CTX_ALLOCATOR} {S_CTX_JOB_SCRIPT} {}\n",
            std::mem::size_of::<spank_option>()
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), ours);
    }
}
