/* Fault injection for lmpi's tests, loaded with LD_PRELOAD into the real binary.
 *   LMPI_FAULT_EIO=substr     statx/openat of a name containing substr fail with EIO
 *   LMPI_FAULT_VANISH=substr  the entry is unlinked just before its statx: it
 *                             vanishes between readdir and stat, as on a live fs.
 *   LMPI_FAULT_SLOW=substr    statx/openat of such names first sleep LMPI_FAULT_SLOW_US
 *                             microseconds (default 1000): metadata latency like Lustre's. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int matches(const char *env, const char *name) {
    const char *p = getenv(env);
    return p && *p && name && strstr(name, p);
}

static void maybe_slow(const char *name) {
    if (matches("LMPI_FAULT_SLOW", name)) {
        const char *us = getenv("LMPI_FAULT_SLOW_US");
        usleep(us ? (useconds_t)atoi(us) : 1000);
    }
}

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    static int (*real)(int, const char *, int, unsigned int, struct statx *);
    if (!real) real = dlsym(RTLD_NEXT, "statx");
    maybe_slow(path);
    if (matches("LMPI_FAULT_EIO", path)) { errno = EIO; return -1; }
    if (matches("LMPI_FAULT_VANISH", path)) unlinkat(dirfd, path, 0);
    return real(dirfd, path, flags, mask, buf);
}

int openat(int dirfd, const char *path, int flags, ...) {
    static int (*real)(int, const char *, int, ...);
    if (!real) real = dlsym(RTLD_NEXT, "openat");
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    maybe_slow(path);
    if (matches("LMPI_FAULT_EIO", path)) { errno = EIO; return -1; }
    return real(dirfd, path, flags, mode);
}
