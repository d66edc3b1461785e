/* glibc functions that reach files through glibc-internal calls (mkstemp's open,
 * remove's unlink, glob's and nftw's directory reads): each on DIR, printing what a
 * program would see. Names made up at random print as their shape only.
 * Usage: glibc_probe DIR (DIR exists and is empty); sort the nftw lines. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/stat.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[4096];

static char *path(const char *name) {
    static char p[4][8192];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", dir, name);
    return p[i];
}

static void describe(const char *what, const char *name, int fd) {
    struct stat st;
    int there = stat(name, &st) == 0;
    const char *base = strrchr(name, '/') + 1;
    printf("%s: fd %s, name %.3s + %zu chars, exists %d, mode %o, type %s\n", what,
           fd >= 0 ? "ok" : strerror(errno), base, strlen(base) - 3, there,
           there ? st.st_mode & 07777 : 0, there ? (S_ISDIR(st.st_mode) ? "dir" : "file") : "-");
}

static int vdp(int fd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = vdprintf(fd, fmt, ap);
    va_end(ap);
    return r;
}

static int walk(const char *p, const struct stat *st, int flag, struct FTW *f) {
    printf("nftw %s flag %d level %d base %s size %s\n", p + strlen(dir), flag, f->level,
           p + f->base, flag == FTW_F ? (st->st_size ? "nonzero" : "zero") : "-");
    return 0;
}

static int skip(const char *p, const struct stat *st, int flag, struct FTW *f) {
    (void)st;
    (void)f;
    printf("skip-walk %s flag %d\n", p + strlen(dir), flag);
    return flag == FTW_D && strstr(p, "/sub") ? FTW_SKIP_SUBTREE : FTW_CONTINUE;
}

static int old_walk(const char *p, const struct stat *st, int flag) {
    (void)st;
    printf("ftw %s flag %d\n", p + strlen(dir), flag);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    snprintf(dir, sizeof dir, "%s", argv[1]);
    setvbuf(stdout, NULL, _IONBF, 0);
    umask(022);

    char t[8192];
    snprintf(t, sizeof t, "%s", path("tmpXXXXXX"));
    int fd = mkstemp(t);
    describe("mkstemp", t, fd);
    printf("mkstemp write %zd, flags rdwr %d\n", write(fd, "data", 4),
           (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR);
    snprintf(t, sizeof t, "%s", path("ostXXXXXX"));
    fd = mkostemp(t, O_CLOEXEC | O_APPEND);
    describe("mkostemp", t, fd);
    printf("mkostemp cloexec %d append %d\n", (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0,
           (fcntl(fd, F_GETFL) & O_APPEND) != 0);
    snprintf(t, sizeof t, "%s", path("sufXXXXXX.txt"));
    fd = mkstemps(t, 4);
    describe("mkstemps", t, fd);
    printf("mkstemps keeps the suffix: %d\n", strcmp(t + strlen(t) - 4, ".txt") == 0);
    snprintf(t, sizeof t, "%s", path("osfXXXXXX.c"));
    describe("mkostemps", t, mkostemps(t, 2, 0));
    snprintf(t, sizeof t, "%s", path("badXXXX"));
    printf("mkstemp short template: %d %s\n", mkstemp(t), strerror(errno));
    snprintf(t, sizeof t, "%s", path("nodir/tmpXXXXXX"));
    printf("mkstemp missing dir: %d %s\n", mkstemp(t), strerror(errno));
    snprintf(t, sizeof t, "%s", path("dtmXXXXXX"));
    char *d = mkdtemp(t);
    describe("mkdtemp", t, d ? 0 : -1);
    snprintf(t, sizeof t, "%s", path("mktXXXXXX"));
    char *m = mktemp(t);
    printf("mktemp: %s, exists %d\n", m[0] ? "a name" : "empty", access(m, F_OK) == 0);

    /* remove: a file, an empty dir, a full dir, nothing. */
    close(open(path("gone"), O_CREAT | O_WRONLY, 0644));
    mkdir(path("emptydir"), 0755);
    mkdir(path("full"), 0755);
    close(open(path("full/x"), O_CREAT | O_WRONLY, 0644));
    printf("remove file %d, then %d\n", remove(path("gone")), access(path("gone"), F_OK));
    printf("remove empty dir %d, then %d\n", remove(path("emptydir")), access(path("emptydir"), F_OK));
    errno = 0;
    printf("remove full dir %d %s\n", remove(path("full")), strerror(errno));
    errno = 0;
    printf("remove missing %d %s\n", remove(path("missing")), strerror(errno));

    /* glob */
    mkdir(path("g"), 0755);
    mkdir(path("g/sub"), 0755);
    close(open(path("g/a.c"), O_CREAT | O_WRONLY, 0644));
    close(open(path("g/b.c"), O_CREAT | O_WRONLY, 0644));
    close(open(path("g/c.h"), O_CREAT | O_WRONLY, 0644));
    close(open(path("g/sub/d.c"), O_CREAT | O_WRONLY, 0644));
    symlink("a.c", path("g/link.c"));
    const char *pats[] = {"g/*.c", "g/*", "g/*/*.c", "g/[ab].c", "g/none*", "g/sub"};
    for (unsigned i = 0; i < sizeof pats / sizeof *pats; i++) {
        glob_t g;
        int flags[] = {0, GLOB_MARK, GLOB_ONLYDIR, GLOB_NOCHECK};
        for (unsigned f = 0; f < 4; f++) {
            int r = glob(path(pats[i]), flags[f], NULL, &g);
            printf("glob %s flags %d: %d,", pats[i], flags[f], r);
            for (size_t k = 0; r == 0 && k < g.gl_pathc; k++)
                printf(" %s", g.gl_pathv[k] + strlen(dir));
            printf("\n");
            if (r == 0)
                globfree(&g);
        }
    }

    /* nftw, ftw */
    int flags[] = {0, FTW_PHYS, FTW_DEPTH | FTW_PHYS, FTW_MOUNT};
    for (unsigned f = 0; f < 4; f++) {
        printf("nftw flags %d: %d\n", flags[f], nftw(path("g"), walk, 8, flags[f]));
    }
    printf("nftw skip: %d\n", nftw(path("g"), skip, 8, FTW_ACTIONRETVAL | FTW_PHYS));
    printf("nftw missing: %d %s\n", nftw(path("nothing"), walk, 8, 0), strerror(errno));
    printf("ftw: %d\n", ftw(path("g"), old_walk, 8));
    symlink("nowhere", path("g/dangling"));
    printf("ftw with a dangling link: %d\n", ftw(path("g"), old_walk, 8));
    unlink(path("g/dangling"));

    /* dprintf and vdprintf write with glibc's internal write. */
    int dfd = open(path("dprintf"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    printf("dprintf: %d\n", dprintf(dfd, "%d-%s\n", 42, "x"));
    printf("vdprintf: %d\n", vdp(dfd, "%05.1f|%c\n", 3.14159, 'z'));
    char db[64] = {0};
    printf("read back: %zd '%s'\n", pread(dfd, db, sizeof db - 1, 0), db);
    close(dfd);

    /* posix_spawn into a directory of its own (addchdir_np). */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addchdir_np(&fa, path("g"));
    posix_spawn_file_actions_addopen(&fa, 1, path("spawned"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    char *sargv[] = {"ls", NULL};
    pid_t sp;
    extern char **environ;
    int sr = posix_spawn(&sp, "/bin/ls", &fa, NULL, sargv, environ);
    int sst = 0;
    if (sr == 0)
        waitpid(sp, &sst, 0);
    posix_spawn_file_actions_destroy(&fa);
    char sb2[256] = {0};
    int sfd = open(path("spawned"), O_RDONLY);
    read(sfd, sb2, sizeof sb2 - 1);
    close(sfd);
    for (char *q = sb2; *q; q++)
        if (*q == '\n')
            *q = ' ';
    printf("spawn in a dir: %d, status %d, ls: %s\n", sr, sst, sb2);

    /* NULL paths: EFAULT, as from the kernel. */
    errno = 0;
    printf("link to NULL: %d %s\n", link(path("g/a.c"), NULL), strerror(errno));
    errno = 0;
    printf("rename to NULL: %d %s\n", rename(path("g/a.c"), NULL), strerror(errno));
    errno = 0;
    printf("symlink of NULL: %d %s\n", symlink(NULL, path("g/s")), strerror(errno));

    /* tempnam, pathconf, ftok, getwd/getcwd/readlink (fortified when built so). */
    char *tn = tempnam(path("g"), "pfx");
    printf("tempnam in the dir: %d, prefix kept: %d\n", tn && strncmp(tn, path("g"), strlen(path("g"))) == 0,
           tn && strstr(tn, "/pfx") != NULL);
    free(tn);
    printf("pathconf NAME_MAX %ld, fpathconf %ld\n", pathconf(path("g"), _PC_NAME_MAX),
           fpathconf(open(path("g/a.c"), O_RDONLY), _PC_NAME_MAX));
    printf("pathconf missing: %ld %s\n", pathconf(path("nope"), _PC_NAME_MAX), strerror(errno));
    printf("ftok works: %d\n", ftok(path("g/a.c"), 'x') != -1);
    char cwd[4096], wd[4096], lk[64];
    if (chdir(path("g")) == 0) {
        printf("getcwd is the dir: %d\n", getcwd(cwd, sizeof cwd) && strcmp(cwd, path("g")) == 0);
        printf("getwd is the dir: %d\n", getwd(wd) && strcmp(wd, path("g")) == 0);
        ssize_t n = readlink("link.c", lk, sizeof lk);
        printf("readlink: %.*s\n", (int)(n > 0 ? n : 0), lk);
        chdir("/");
    }
    /* stdio modes with '+' late, freopen(NULL) */
    FILE *f = fopen(path("stdio"), "wx+");
    fputs("plus", f);
    rewind(f);
    char sb[16] = {0};
    printf("wx+ reads back: %s\n", fgets(sb, sizeof sb, f) ? sb : strerror(errno));
    f = freopen(NULL, "r", f);
    memset(sb, 0, sizeof sb);
    printf("freopen(NULL, r): %s\n", f && fgets(sb, sizeof sb, f) ? sb : "failed");
    if (f)
        fclose(f);
    return 0;
}
