/* C shims of the preload library, for what Rust cannot express:
 *  - execl/execlp/execle are C-variadic: gkfs_execl... collect the arguments and call
 *    execv/execvp/execve, which the library defines (so gkfs state reaches the new
 *    program); the exported execl... are naked Rust trampolines into these (exec.rs);
 *  - a stdio stream made with fopencookie has no file descriptor; programs call
 *    fileno(stdout), so the descriptor is written into glibc's public FILE struct. */
#define _GNU_SOURCE
#include <errno.h>
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

void gkfs_set_fileno(FILE *f, int fd) { f->_fileno = fd; }
