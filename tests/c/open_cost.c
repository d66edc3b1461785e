/* What an open and a close of a gkfs file cost in system calls: creates N files in
 * DIR, then opens each again read-only, closing every descriptor right away. Each
 * open and each close sits between two marker calls (getppid through syscall(),
 * which no preload library sees) so that a trace (strace) shows which system calls
 * each one made. Usage: open_cost DIR N */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void marker(void) { syscall(SYS_getppid); }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s DIR N\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    int n = atoi(argv[2]);
    if (mkdir(dir, 0755) != 0) {
        perror("mkdir");
        return 1;
    }
    char path[4096];
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n; i++) {
            snprintf(path, sizeof path, "%s/f%d", dir, i);
            int flags = pass == 0 ? O_CREAT | O_EXCL | O_WRONLY : O_RDONLY;
            marker();
            int fd = open(path, flags | O_CLOEXEC, 0644);
            marker();
            if (fd < 0) {
                perror(path);
                return 1;
            }
            int r = close(fd);
            marker();
            if (r != 0) {
                perror("close");
                return 1;
            }
        }
    }
    printf("opened and closed %d files twice\n", n);
    return 0;
}
