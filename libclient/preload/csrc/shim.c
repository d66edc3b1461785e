/* C shims of the preload library, for what Rust cannot express:
 *  - execl/execlp/execle are C-variadic: gkfs_execl... collect the arguments and call
 *    execv/execvp/execve, which the library defines (so gkfs state reaches the new
 *    program); the exported execl... are naked Rust trampolines into these (exec.rs);
 *  - dprintf/vdprintf format with glibc's internal write, which no preload sees: for
 *    a gkfs fd the text is formatted here and written with write(), which the library
 *    defines; other fds go to glibc's own;
 *  - a stdio stream made with fopencookie has no file descriptor; programs call
 *    fileno(stdout), so the descriptor is written into glibc's public FILE struct. */
#define _GNU_SOURCE
#include <errno.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_ARGS 4096

static int collect(const char *arg0, va_list ap, char **argv, char ***envp) {
    int n = 0;
    argv[n++] = (char *)arg0;
    if (arg0) {
        for (;;) {
            if (n >= MAX_ARGS) { errno = E2BIG; return -1; }
            char *a = va_arg(ap, char *);
            argv[n++] = a;
            if (!a) break;
        }
    }
    if (envp) *envp = va_arg(ap, char **);
    return 0;
}

int gkfs_execl(const char *path, const char *arg0, ...) {
    char *argv[MAX_ARGS];
    va_list ap;
    va_start(ap, arg0);
    int r = collect(arg0, ap, argv, NULL);
    va_end(ap);
    return r < 0 ? -1 : execv(path, argv);
}

int gkfs_execlp(const char *file, const char *arg0, ...) {
    char *argv[MAX_ARGS];
    va_list ap;
    va_start(ap, arg0);
    int r = collect(arg0, ap, argv, NULL);
    va_end(ap);
    return r < 0 ? -1 : execvp(file, argv);
}

int gkfs_execle(const char *path, const char *arg0, ...) {
    char *argv[MAX_ARGS];
    char **envp = NULL;
    va_list ap;
    va_start(ap, arg0);
    int r = collect(arg0, ap, argv, &envp);
    va_end(ap);
    return r < 0 ? -1 : execve(path, argv, envp);
}

int gkfs_fd_is_ours(int fd); /* table.rs */

int gkfs_vdprintf(int fd, const char *fmt, va_list ap) {
    if (!gkfs_fd_is_ours(fd)) {
        static int (*real)(int, const char *, va_list);
        if (!real)
            real = (int (*)(int, const char *, va_list))dlsym(RTLD_NEXT, "vdprintf");
        if (!real) { errno = ENOSYS; return -1; }
        return real(fd, fmt, ap);
    }
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    if (n < 0) return -1;
    int off = 0;
    while (off < n) {
        ssize_t w = write(fd, s + off, (size_t)(n - off));
        if (w < 0) {
            if (errno == EINTR) continue;
            free(s);
            return -1;
        }
        off += (int)w;
    }
    free(s);
    return n;
}

int gkfs_dprintf(int fd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = gkfs_vdprintf(fd, fmt, ap);
    va_end(ap);
    return r;
}

/* The _FORTIFY_SOURCE forms: the flag only asks for extra checks of the format. */
int gkfs_vdprintf_chk(int fd, int flag, const char *fmt, va_list ap) {
    (void)flag;
    return gkfs_vdprintf(fd, fmt, ap);
}

int gkfs_dprintf_chk(int fd, int flag, const char *fmt, ...) {
    (void)flag;
    va_list ap;
    va_start(ap, fmt);
    int r = gkfs_vdprintf(fd, fmt, ap);
    va_end(ap);
    return r;
}

void gkfs_set_fileno(FILE *f, int fd) { f->_fileno = fd; }
