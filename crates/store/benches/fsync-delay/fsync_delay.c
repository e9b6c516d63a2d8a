/*
 * Preloaded shim that makes every fsync and fdatasync take 1 ms longer, so
 * the store benchmark on tmpfs sees a disk with a known, steady fsync cost
 * (docs/BENCHMARKS.md, "Store: the witness per marker commit").
 *
 * Build: cc -O2 -shared -fPIC -o /tmp/fsync_delay.so fsync_delay.c -ldl
 * Use:   TMPDIR=/dev/shm LD_PRELOAD=/tmp/fsync_delay.so \
 *          cargo bench -p thresig-store --bench store_load
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <time.h>

static void delay(void) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, 0);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    delay();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    delay();
    return real(fd);
}
