/* Programs choose descriptor numbers themselves: dup2 onto low numbers, close every
 * descriptor before becoming a daemon, close_range/closefrom before exec. None of that
 * may touch the preload library's own descriptors: gkfs files must keep working after
 * each step, with the same results as on a local directory.
 * Usage: fd_probe DIR (DIR exists and is empty). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[4096];

static const char *path(const char *name) {
    static char p[8192];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* Writes `text` to a new file `name`, reads it back through a second open. */
static void roundtrip(const char *step, const char *name, const char *text) {
    int fd = open(path(name), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) {
        printf("%s: open for writing: %s\n", step, strerror(errno));
        return;
    }
    ssize_t w = write(fd, text, strlen(text));
    int c = close(fd);
    char buf[256] = {0};
    int rfd = open(path(name), O_RDONLY);
    ssize_t r = rfd < 0 ? -1 : read(rfd, buf, sizeof buf - 1);
    if (rfd >= 0)
        close(rfd);
    printf("%s: wrote %zd close %d read %zd '%s'\n", step, w, c, r, buf);
}

/* Writes through an fd the program placed at `num` with dup2. */
static void at_number(int num) {
    int fd = open(path("numbered"), O_CREAT | O_WRONLY | O_APPEND, 0644);
    int d = fd == num ? num : dup2(fd, num);
    if (fd != num)
        close(fd);
    char line[32];
    int n = snprintf(line, sizeof line, "fd %d\n", num);
    ssize_t w = d < 0 ? -1 : write(num, line, n);
    close(num);
    if (d != num || w != n)
        printf("dup2 onto %d: %d, write %zd (%s)\n", num, d, w, strerror(errno));
}

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    snprintf(dir, sizeof dir, "%s", argv[1]);
    setvbuf(stdout, NULL, _IONBF, 0);
    roundtrip("start", "a", "first");
    /* What `exec 3> f; echo x >&3` does in a shell. */
    for (int num = 3; num < 10; num++)
        at_number(num);
    roundtrip("after writing through 3..9", "a2", "first again");

    /* Every low number taken over by the program. */
    int null = open("/dev/null", O_RDWR);
    for (int fd = 3; fd < 64; fd++)
        if (fd != null)
            dup2(null, fd);
    roundtrip("after dup2 of /dev/null onto 3..63", "b", "second");
    for (int fd = 3; fd < 64; fd++)
        close(fd);
    roundtrip("after closing 3..63", "c", "third");

    /* Every low number a pipe of the program: nothing of the library may go in. */
    int p[2];
    if (pipe2(p, O_NONBLOCK) != 0)
        return 3;
    for (int fd = 3; fd < 64; fd++)
        if (fd != p[0] && fd != p[1])
            dup2(p[1], fd);
    roundtrip("after dup2 of a pipe onto 3..63", "pipe", "piped");
    char junk[65536];
    ssize_t got = read(p[0], junk, sizeof junk);
    printf("bytes that reached the program's pipe: %zd\n", got < 0 ? 0 : got);
    for (int fd = 3; fd < 64; fd++)
        close(fd);

    /* Files at numbers the program chose, one after the other. */
    for (int num = 3; num < 64; num++)
        at_number(num);
    char buf[4096] = {0};
    int fd = open(path("numbered"), O_RDONLY);
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    int lines = 0;
    for (ssize_t i = 0; i < r; i++)
        lines += buf[i] == '\n';
    printf("numbered: %zd bytes, %d lines, first '%.4s'\n", r, lines, buf);

    /* A daemon closing everything it did not open itself. */
    for (int fd = 3; fd < 1024; fd++)
        close(fd);
    roundtrip("after closing 3..1023 one by one", "d", "fourth");

    int keep = open(path("kept"), O_CREAT | O_RDWR, 0644);
    write(keep, "kept", 4);
    printf("close_range(keep+1, ~0): %d\n", close_range(keep + 1, ~0U, 0));
    roundtrip("after close_range above a kept file", "e", "fifth");
    char k[8] = {0};
    printf("kept file still open: pread %zd '%s'\n", pread(keep, k, 4, 0), k);
    printf("close_range(3, ~0, CLOEXEC): %d\n", close_range(3, ~0U, CLOSE_RANGE_CLOEXEC));
    printf("kept fd flags: cloexec %d\n", (fcntl(keep, F_GETFD) & FD_CLOEXEC) != 0);
    roundtrip("after close_range(CLOEXEC)", "f", "sixth");
    printf("close_range(3, ~0): %d\n", close_range(3, ~0U, 0));
    printf("kept fd after close_range: %zd (%s)\n", pread(keep, k, 4, 0), strerror(errno));
    roundtrip("after close_range(3, ~0)", "g", "seventh");
    closefrom(3);
    roundtrip("after closefrom(3)", "h", "eighth");

    /* A forked child that closes everything, works, and exits; then the parent. */
    pid_t pid = fork();
    if (pid == 0) {
        closefrom(3);
        roundtrip("child after closefrom(3)", "i", "ninth");
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    roundtrip("parent after the child", "j", "tenth");

    /* A vfork child that rearranges descriptors before it execs (as Python's
     * subprocess does): its close and dup2 are of its own descriptor table; the
     * parent's file stays open, at its offset. */
    int v = open(path("vforked"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    write(v, "before", 6);
    pid = vfork();
    if (pid == 0) {
        dup2(v, 9);
        close(v);
        execl("/bin/sh", "sh", "-c", "echo ' from the child' >&9", (char *)NULL);
        _exit(127);
    }
    waitpid(pid, &st, 0);
    ssize_t vw = write(v, " after", 6);
    char vb[64] = {0};
    ssize_t vr = pread(v, vb, sizeof vb - 1, 0);
    printf("after a vfork child closed it: write %zd, pread %zd '%s', child %d\n", vw, vr, vb,
           WEXITSTATUS(st));
    close(v);
    return 0;
}
