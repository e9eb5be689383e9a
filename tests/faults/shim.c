/* Fault and latency injection for lmpi's tests and benchmarks, loaded with
 * LD_PRELOAD into the real binaries (lmpi, rsync, cp alike).
 *   LMPI_FAULT_EIO=substr     statx/openat(64)/openat2 of a name containing substr fail with EIO
 *                             (or with errno LMPI_FAULT_ERRNO: ESTALE, ENOTCONN, ...)
 *   LMPI_FAULT_VANISH=substr  the entry is unlinked just before its statx (or a
 *                             non-creating openat): it vanishes between readdir
 *                             and stat, as on a live fs.
 *   LMPI_FAULT_SLOW=substr    metadata calls on such names first sleep
 *                             LMPI_FAULT_SLOW_US microseconds (default 1000);
 *   LMPI_FAULT_HANG=substr    opening such a name first opens the FIFO named by
 *                             LMPI_FAULT_HANG_FIFO for reading: it blocks until
 *                             a writer comes, and a signal with SA_RESTART
 *                             restarts it (a call a stop cannot interrupt).
 *   LMPI_FAULT_SLOW_ALL=1     ... on every name: Lustre-like metadata latency
 *                             for benchmarks (the sleep costs no CPU, so only a
 *                             tool with many operations in flight hides it).
 *   LMPI_FAULT_WRITE_US=n     copy_file_range and pwrite first sleep n
 *                             microseconds: a slow disk, so a test can stop a
 *                             chunked copy midway. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

static int matches(const char *env, const char *name) {
    const char *p = getenv(env);
    return p && *p && name && strstr(name, p);
}

static void maybe_slow(const char *name) {
    const char *all = getenv("LMPI_FAULT_SLOW_ALL");
    if ((all && *all == '1') || matches("LMPI_FAULT_SLOW", name)) {
        const char *us = getenv("LMPI_FAULT_SLOW_US");
        usleep(us ? (useconds_t)atoi(us) : 1000);
    }
}

static int fault_errno(void) {
    const char *e = getenv("LMPI_FAULT_ERRNO");
    return e && *e ? atoi(e) : EIO;
}

#define REAL(name) \
    static __typeof__(name) *real; \
    if (!real) real = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    REAL(statx);
    maybe_slow(path);
    if (matches("LMPI_FAULT_EIO", path)) { errno = fault_errno(); return -1; }
    if (matches("LMPI_FAULT_VANISH", path)) unlinkat(dirfd, path, 0);
    return real(dirfd, path, flags, mask, buf);
}

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
}

static void maybe_hang(const char *name) {
    const char *fifo = getenv("LMPI_FAULT_HANG_FIFO");
    if (fifo && matches("LMPI_FAULT_HANG", name)) {
        REAL(open);
        int fd = real(fifo, O_RDONLY);
        if (fd >= 0) close(fd);
    }
}

/* openat and openat64 alike: lmpi's opens (rustix on glibc) call openat64. */
static int faulty_openat(int (*real)(int, const char *, int, ...), int dirfd,
                         const char *path, int flags, mode_t mode) {
    maybe_slow(path);
    maybe_hang(path);
    if (matches("LMPI_FAULT_EIO", path)) { errno = fault_errno(); return -1; }
    /* A new file may be opened straight from its listing, without a stat. */
    if (!(flags & O_CREAT) && matches("LMPI_FAULT_VANISH", path)) unlinkat(dirfd, path, 0);
    return real(dirfd, path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...) {
    REAL(openat);
    va_list ap; va_start(ap, flags); mode_t mode = mode_arg(flags, ap); va_end(ap);
    return faulty_openat(real, dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    REAL(openat64);
    va_list ap; va_start(ap, flags); mode_t mode = mode_arg(flags, ap); va_end(ap);
    return faulty_openat(real, dirfd, path, flags, mode);
}

int open(const char *path, int flags, ...) {
    REAL(open);
    va_list ap; va_start(ap, flags); mode_t mode = mode_arg(flags, ap); va_end(ap);
    maybe_slow(path);
    return real(path, flags, mode);
}

int open64(const char *path, int flags, ...) {
    REAL(open64);
    va_list ap; va_start(ap, flags); mode_t mode = mode_arg(flags, ap); va_end(ap);
    maybe_slow(path);
    return real(path, flags, mode);
}

static void maybe_slow_write(void) {
    const char *us = getenv("LMPI_FAULT_WRITE_US");
    if (us && *us) usleep((useconds_t)atoi(us));
}

ssize_t copy_file_range(int in, off_t *in_off, int out, off_t *out_off, size_t len, unsigned int flags) {
    REAL(copy_file_range);
    maybe_slow_write();
    return real(in, in_off, out, out_off, len, flags);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite);
    maybe_slow_write();
    return real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
    REAL(pwrite64);
    maybe_slow_write();
    return real(fd, buf, n, off);
}

/* The rest only add latency: the calls rsync and cp make per entry. */
#define SLOW1(ret, name, T1) \
    ret name(T1 a) { REAL(name); maybe_slow(a); return real(a); }
#define SLOW2(ret, name, T1, T2) \
    ret name(T1 a, T2 b) { REAL(name); maybe_slow(a); return real(a, b); }
#define SLOW3(ret, name, T1, T2, T3) \
    ret name(T1 a, T2 b, T3 c) { REAL(name); maybe_slow(a); return real(a, b, c); }
#define SLOWAT2(ret, name, T2) \
    ret name(int d, const char *p, T2 b) { REAL(name); maybe_slow(p); return real(d, p, b); }
#define SLOWAT3(ret, name, T2, T3) \
    ret name(int d, const char *p, T2 b, T3 c) { REAL(name); maybe_slow(p); return real(d, p, b, c); }
#define SLOWAT4(ret, name, T2, T3, T4) \
    ret name(int d, const char *p, T2 b, T3 c, T4 e) { REAL(name); maybe_slow(p); return real(d, p, b, c, e); }

SLOW2(int, stat, const char *, struct stat *)
SLOW2(int, lstat, const char *, struct stat *)
SLOW2(int, stat64, const char *, struct stat64 *)
SLOW2(int, lstat64, const char *, struct stat64 *)
SLOWAT3(int, fstatat, struct stat *, int)
SLOWAT3(int, fstatat64, struct stat64 *, int)
SLOW2(int, mkdir, const char *, mode_t)
SLOWAT2(int, mkdirat, mode_t)
SLOW1(int, unlink, const char *)
SLOWAT2(int, unlinkat, int)
SLOW1(int, rmdir, const char *)
SLOW2(int, rename, const char *, const char *)
SLOW3(int, chown, const char *, uid_t, gid_t)
SLOW3(int, lchown, const char *, uid_t, gid_t)
SLOWAT4(int, fchownat, uid_t, gid_t, int)
SLOW2(int, chmod, const char *, mode_t)
SLOWAT3(int, fchmodat, mode_t, int)
int utimensat(int d, const char *p, const struct timespec t[2], int f) {
    REAL(utimensat);
    maybe_slow(p);
    return real(d, p, t, f);
}
SLOW2(int, symlink, const char *, const char *)
SLOW3(ssize_t, readlink, const char *, char *, size_t)
SLOWAT3(ssize_t, readlinkat, char *, size_t)
SLOW3(int, mknod, const char *, mode_t, dev_t)
SLOWAT3(int, mknodat, mode_t, dev_t)

/* lmpi opens directories with openat2, which glibc reaches only through
 * syscall(2): faults and latency apply to it as to openat. rustix on glibc
 * also makes copy_file_range (and getdents64, fchown, fchmod) this way. */
long syscall(long n, ...) {
    REAL(syscall);
    va_list ap; va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
#ifdef SYS_openat2
    if (n == SYS_openat2) {
        const char *path = (const char *)a[1];
        maybe_slow(path);
        if (matches("LMPI_FAULT_EIO", path)) { errno = fault_errno(); return -1; }
    }
#endif
#ifdef SYS_copy_file_range
    if (n == SYS_copy_file_range) maybe_slow_write();
#endif
    return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}
