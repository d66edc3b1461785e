//! Knowing without a system call that this is not a vfork child.
//!
//! A vfork child runs in its parent's memory until it execs or exits, so it must not
//! change the parent's fd table or working directory (`state::in_vfork_child`). The
//! sure test compares the pid with the owner's, a system call: too dear for every
//! close of a gkfs file. So the library defines `vfork` itself and counts the vforks
//! under way: while none is, no thread of the process can be a vfork child, and the
//! test is one load. The count is in memory the child shares, raised before the child
//! exists and lowered by the parent once the child has exec'ed or exited.
//!
//! It also counts the vfork as a fork (`fds::FORKS`): the child, and the program it
//! execs, hold this process's descriptions from then on.
//!
//! A wrapper around vfork cannot be an ordinary function: the child returns through
//! the wrapper's stack frame and then overwrites it while the parent sleeps. So the
//! wrapper, like glibc's own, keeps the return address in a register across the
//! system call (naked assembly, x86_64). Children made another way (glibc's
//! posix_spawn, system and popen make theirs with clone) run no code of this library
//! before their exec. On other architectures the wrapper is absent and every test
//! pays the system call.

use std::sync::atomic::{AtomicU32, Ordering};

/// vforks under way (raised by `vfork` before the system call, lowered by the parent
/// after it).
static UNDER_WAY: AtomicU32 = AtomicU32::new(0);

/// Can this thread be a vfork child? (False means surely not; true means ask getpid.)
pub fn maybe_child() -> bool {
    !cfg!(target_arch = "x86_64") || UNDER_WAY.load(Ordering::Acquire) != 0
}

/// vfork(2), counting the vforks under way.
///
/// # Safety
/// Called as libc's vfork: the caller follows vfork's rules (the child only execs or
/// exits, and does not return from the calling function).
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn vfork() -> libc::pid_t {
    core::arch::naked_asm!(
        "lock inc dword ptr [rip + {count}]",
        // The child holds this process's descriptions from now on.
        "lock inc qword ptr [rip + {forks}]",
        // The return address leaves the shared stack for a register (the child's
        // calls will overwrite the stack; registers are per process).
        "pop rdi",
        "mov eax, {nr}",
        "syscall",
        "push rdi",
        "test rax, rax",
        "jz 2f",
        // The parent (or a failed call): the child has exec'ed or exited.
        "lock dec dword ptr [rip + {count}]",
        "cmp rax, -4095",
        "jae 3f",
        "2:",
        "ret",
        "3:",
        "neg eax",
        "mov edi, eax",
        "jmp {failed}",
        count = sym UNDER_WAY,
        forks = sym crate::fds::FORKS,
        nr = const libc::SYS_vfork,
        failed = sym vfork_failed,
    );
}

/// vfork's error return: errno set, -1.
#[cfg(target_arch = "x86_64")]
extern "C" fn vfork_failed(errno: libc::c_int) -> libc::pid_t {
    crate::hook::set_errno(errno);
    -1
}
