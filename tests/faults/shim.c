/* Fault and latency injection for lmpi's tests and benchmarks, loaded with
 * LD_PRELOAD into the real binaries (lmpi, rsync, cp alike).
 *   LMPI_FAULT_EIO=substr     statx/openat(64)/openat2 of a name containing substr fail with EIO
 *                             (or with errno LMPI_FAULT_ERRNO: ESTALE, ENOTCONN, ...)
 *   LMPI_FAULT_VANISH=substr  the entry is unlinked just before its statx (or a
 *                             non-creating openat): it vanishes between readdir
 *                             and stat, as on a live fs.
 *   LMPI_FAULT_SLOW=substr    metadata calls naming such a path first sleep
 *                             LMPI_FAULT_SLOW_US microseconds (default 1000);
 *   LMPI_FAULT_HANG=substr    opening such a name first opens the FIFO named by
 *                             LMPI_FAULT_HANG_FIFO for reading: it blocks until
 *                             a writer comes, and a signal with SA_RESTART
 *                             restarts it (a call a stop cannot interrupt).
 *   LMPI_FAULT_SLOW_ALL=1     every metadata call sleeps, path-based and
 *                             fd-based alike: Lustre-like metadata latency for
 *                             benchmarks (the sleep costs no CPU, so only a tool
 *                             with many operations in flight hides it). See
 *                             "What counts as a metadata call" below.
 *                             Except on system files (/proc, /sys, /etc,
 *                             /usr, /lib*, /run, /dev but /dev/shm, Open
 *                             MPI's /tmp/ompi.*) and descriptors opened from
 *                             them: MPI start-up makes ~800 such calls per
 *                             rank (hwloc reads /sys), local on a cluster.
 *   LMPI_FAULT_COUNT=file     each call that sleeps (or would: use
 *                             LMPI_FAULT_SLOW_US=0 to count without sleeping)
 *                             appends one line "syscall path" to file, named
 *                             by the system call it makes, as strace names it:
 *                             bench/shimcount.sh compares them with strace.
 *   LMPI_FAULT_WRITE_US=n     copy_file_range and pwrite first sleep n
 *                             microseconds: a slow disk, so a test can stop a
 *                             chunked copy midway.
 *
 * What counts as a metadata call: what a Lustre client sends to a metadata
 * server, i.e. bench/syscalls.sh's meta_re plus ioctl and the handle calls.
 * stat family (stat, lstat, fstat, fstatat, statx, also with AT_EMPTY_PATH),
 * every open (open, openat, their 64 and fortified __open_2 forms, creat,
 * mkstemp, fopen, openat2 and open_by_handle_at through syscall(2)), close
 * (close, fclose, closedir), directory reads (getdents64, and each readdir
 * that refills glibc's buffer: see dir_refills), the xattr family, ioctl,
 * chown/chmod/utimes in all their forms, mkdir, mknod, unlink, rmdir,
 * rename, link, symlink, readlink, access. glibc makes some of these inside
 * other functions without going through the PLT, where LD_PRELOAD cannot see
 * them; those functions are wrapped instead, one sleep per system call they
 * make (opendir: openat + fstat; fdopendir: fstat; closedir: close).
 * Not covered: the dynamic loader's opens (before the shim exists),
 * realpath(3)'s readlinks, scandir(3), locale and NSS files read by glibc
 * itself; all of them are start-up costs, not per entry. Data calls (read,
 * write, copy_file_range, fsync, ftruncate) and statfs do not sleep. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>

static int matches(const char *env, const char *name) {
    const char *p = getenv(env);
    return p && *p && name && strstr(name, p);
}

#define REAL(name) \
    static __typeof__(name) *real; \
    if (!real) real = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

/* Appends "sys path\n" to LMPI_FAULT_COUNT, opened once per process (a
 * forked child shares the descriptor; O_APPEND keeps lines whole). */
static void count(const char *sys, const char *path) {
    static int fd = -2;
    if (fd == -2) {
        const char *f = getenv("LMPI_FAULT_COUNT");
        int (*ropen)(const char *, int, ...) = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
        int got = f && *f ? ropen(f, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644) : -1;
        if (!__sync_bool_compare_and_swap(&fd, -2, got) && got >= 0) {
            int (*rclose)(int) = (int (*)(int))dlsym(RTLD_NEXT, "close");
            rclose(got);
        }
    }
    if (fd < 0) return;
    char line[256];
    int n = snprintf(line, sizeof line, "%s %.200s\n", sys, path ? path : "-");
    if (n > (int)sizeof line - 1) { n = sizeof line - 1; line[n - 1] = '\n'; }
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
}

/* Descriptors opened from system files (a bit each): calls on them do not
 * sleep under LMPI_FAULT_SLOW_ALL. */
#define MAXFD 65536
static unsigned char system_fds[MAXFD / 8];
static int is_system_fd(int fd) {
    return fd >= 0 && fd < MAXFD && (__atomic_load_n(&system_fds[fd / 8], __ATOMIC_RELAXED) >> (fd % 8)) & 1;
}
static void mark_fd(int fd, int system) {
    if (fd < 0 || fd >= MAXFD) return;
    unsigned char bit = (unsigned char)(1u << (fd % 8));
    if (system) __atomic_fetch_or(&system_fds[fd / 8], bit, __ATOMIC_RELAXED);
    else __atomic_fetch_and(&system_fds[fd / 8], (unsigned char)~bit, __ATOMIC_RELAXED);
}

/* Files local on any cluster node, which MPI start-up reads by the hundred
 * (hwloc's /sys walk, PMIx, libraries): not what a mover's latency is about. */
static int system_file(int fd, const char *path) {
    static const char *const prefixes[] = {"/proc/", "/sys/", "/etc/", "/usr/", "/lib", "/run/", "/tmp/ompi."};
    if (path && path[0] == '/') {
        if (!path[1]) return 1;  /* hwloc opens "/" and its files from there */
        /* lmpi names entries below an open directory /proc/self/fd/N/name. */
        static const char *const fds[] = {"/proc/self/fd/", "/proc/thread-self/fd/"};
        for (size_t i = 0; i < 2; i++)
            if (!strncmp(path, fds[i], strlen(fds[i])))
                return is_system_fd(atoi(path + strlen(fds[i])));
        if (!strncmp(path, "/dev/", 5)) return strncmp(path, "/dev/shm/", 9) != 0;
        for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
            if (!strncmp(path, prefixes[i], strlen(prefixes[i]))) return 1;
        return 0;
    }
    return is_system_fd(fd);  /* relative to fd, or on fd itself */
}

/* A metadata call on path relative to fd (AT_FDCWD when the call takes no
 * descriptor), or on fd alone (path NULL), which only LMPI_FAULT_SLOW_ALL
 * slows. Returns whether it is on a system file, for the opens to mark the
 * descriptor they return. */
static int slow(const char *sys, int fd, const char *path) {
    const char *all = getenv("LMPI_FAULT_SLOW_ALL");
    int every = all && *all == '1';
    int system = every && system_file(fd, path);
    if ((every && !system) || matches("LMPI_FAULT_SLOW", path)) {
        count(sys, path);
        const char *us = getenv("LMPI_FAULT_SLOW_US");
        useconds_t n = us ? (useconds_t)atoi(us) : 1000;
        if (n) usleep(n);
    }
    return system;
}

/* An open that returned fd: remember whether it is a system file's. */
static int opened(int fd, int system) {
    mark_fd(fd, system);
    return fd;
}

static int fault_errno(void) {
    const char *e = getenv("LMPI_FAULT_ERRNO");
    return e && *e ? atoi(e) : EIO;
}

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    REAL(statx);
    slow("statx", dirfd, path);
    if (matches("LMPI_FAULT_EIO", path)) { errno = fault_errno(); return -1; }
    if (matches("LMPI_FAULT_VANISH", path)) {
        REAL(unlinkat);
        real(dirfd, path, 0);
    }
    return real(dirfd, path, flags, mask, buf);
}

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
}

static void maybe_hang(const char *name) {
    const char *fifo = getenv("LMPI_FAULT_HANG_FIFO");
    if (fifo && matches("LMPI_FAULT_HANG", name)) {
        int fd;
        { REAL(open); fd = real(fifo, O_RDONLY); }
        if (fd >= 0) { REAL(close); real(fd); }
    }
}

/* openat and openat64 alike: lmpi's opens (rustix on glibc) call openat64. */
static int faulty_openat(int (*real)(int, const char *, int, ...), int dirfd,
                         const char *path, int flags, mode_t mode) {
    int system = slow("openat", dirfd, path);
    maybe_hang(path);
    if (matches("LMPI_FAULT_EIO", path)) { errno = fault_errno(); return -1; }
    /* A new file may be opened straight from its listing, without a stat. */
    if (!(flags & O_CREAT) && matches("LMPI_FAULT_VANISH", path)) {
        REAL(unlinkat);
        real(dirfd, path, 0);
    }
    return opened(real(dirfd, path, flags, mode), system);
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
    int system = slow("openat", AT_FDCWD, path);
    return opened(real(path, flags, mode), system);
}

int open64(const char *path, int flags, ...) {
    REAL(open64);
    va_list ap; va_start(ap, flags); mode_t mode = mode_arg(flags, ap); va_end(ap);
    int system = slow("openat", AT_FDCWD, path);
    return opened(real(path, flags, mode), system);
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

/* The rest only add latency. WRAP(syscall, fd, path, ret, fn, (params), (args)):
 * fn sleeps as one call of syscall on path relative to fd (path NULL: on fd
 * itself), then runs. OPEN(...) also marks the descriptor it returns. */
#define WRAP(sys, fd, path, ret, name, params, args) \
    ret name params { REAL(name); slow(sys, fd, path); return real args; }
#define OPEN(fd, path, name, params, args) \
    int name params { REAL(name); int system = slow("openat", fd, path); return opened(real args, system); }

/* glibc 2.33+ makes every stat form (fstat too) with newfstatat. */
WRAP("newfstatat", AT_FDCWD, p, int, stat, (const char *p, struct stat *b), (p, b))
WRAP("newfstatat", AT_FDCWD, p, int, lstat, (const char *p, struct stat *b), (p, b))
WRAP("newfstatat", AT_FDCWD, p, int, stat64, (const char *p, struct stat64 *b), (p, b))
WRAP("newfstatat", AT_FDCWD, p, int, lstat64, (const char *p, struct stat64 *b), (p, b))
WRAP("newfstatat", fd, NULL, int, fstat, (int fd, struct stat *b), (fd, b))
WRAP("newfstatat", fd, NULL, int, fstat64, (int fd, struct stat64 *b), (fd, b))
WRAP("newfstatat", d, p, int, fstatat, (int d, const char *p, struct stat *b, int f), (d, p, b, f))
WRAP("newfstatat", d, p, int, fstatat64, (int d, const char *p, struct stat64 *b, int f), (d, p, b, f))

/* Opens glibc makes inside other functions, and the fortified forms
 * (rsync calls __open_2 and __openat_2). */
OPEN(AT_FDCWD, p, __open_2, (const char *p, int f), (p, f))
OPEN(AT_FDCWD, p, __open64_2, (const char *p, int f), (p, f))
OPEN(d, p, __openat_2, (int d, const char *p, int f), (d, p, f))
OPEN(d, p, __openat64_2, (int d, const char *p, int f), (d, p, f))
OPEN(AT_FDCWD, p, creat, (const char *p, mode_t m), (p, m))
OPEN(AT_FDCWD, p, creat64, (const char *p, mode_t m), (p, m))
OPEN(AT_FDCWD, t, mkstemp, (char *t), (t))
OPEN(AT_FDCWD, t, mkstemp64, (char *t), (t))
OPEN(AT_FDCWD, t, mkostemp, (char *t, int f), (t, f))
OPEN(AT_FDCWD, t, mkostemp64, (char *t, int f), (t, f))
int open_by_handle_at(int m, struct file_handle *h, int f) {
    REAL(open_by_handle_at);
    slow("open_by_handle_at", m, NULL);
    return opened(real(m, h, f), 0);
}
WRAP("name_to_handle_at", d, p, int, name_to_handle_at,
     (int d, const char *p, struct file_handle *h, int *m, int f), (d, p, h, m, f))
#define FOPEN(name) \
    FILE *name(const char *p, const char *m) { \
        REAL(name); \
        int system = slow("openat", AT_FDCWD, p); \
        FILE *s = real(p, m); \
        if (s) opened(fileno(s), system); \
        return s; \
    }
FOPEN(fopen)
FOPEN(fopen64)

/* The mark goes before the descriptor does: once closed, its number may be
 * another thread's. */
int close(int fd) {
    REAL(close);
    slow("close", fd, NULL);
    mark_fd(fd, 0);
    return real(fd);
}
int fclose(FILE *s) {
    REAL(fclose);
    int fd = fileno(s);
    slow("close", fd, NULL);
    mark_fd(fd, 0);
    return real(s);
}

/* Directory streams: opendir opens and fstats, fdopendir fstats, closedir
 * closes, readdir calls getdents64 when its buffer is used up; all of it
 * inside glibc. */
DIR *opendir(const char *p) {
    REAL(opendir);
    int system = slow("openat", AT_FDCWD, p);
    slow("newfstatat", AT_FDCWD, p);
    DIR *d = real(p);
    if (d) opened(dirfd(d), system);
    return d;
}
WRAP("newfstatat", fd, NULL, DIR *, fdopendir, (int fd), (fd))
int closedir(DIR *d) {
    REAL(closedir);
    int fd = dirfd(d);
    slow("close", fd, NULL);
    mark_fd(fd, 0);
    return real(d);
}
WRAP("getdents64", fd, NULL, ssize_t, getdents64, (int fd, void *b, size_t n), (fd, b, n))

/* Whether this readdir on d will call getdents64: glibc's DIR begins
 * { int fd; lock; size_t allocation, size, offset; ... } (glibc 2.x,
 * dirent/dirstream.h) and refills when offset reaches size. Checked
 * against dirfd(); a DIR that does not look like that counts one read per
 * readdir that ends the stream (the fewest a directory read can cost). */
struct glibc_dir_head { int fd; int lock; size_t allocation, size, offset; };
static int dir_refills(DIR *d, int *known) {
    const struct glibc_dir_head *h = (const struct glibc_dir_head *)d;
    *known = d && h->fd == dirfd(d) && h->allocation >= 512 && h->allocation <= (1u << 24) &&
             h->size <= h->allocation && h->offset <= h->allocation;
    return *known && h->offset >= h->size;
}
#define READDIR(ret, name) \
    ret *name(DIR *d) { \
        REAL(name); \
        int known, refill = dir_refills(d, &known); \
        if (refill) slow("getdents64", dirfd(d), NULL); \
        ret *e = real(d); \
        if (!known && !e) slow("getdents64", dirfd(d), NULL); \
        return e; \
    }
READDIR(struct dirent, readdir)
READDIR(struct dirent64, readdir64)

/* Names. */
WRAP("mkdir", AT_FDCWD, p, int, mkdir, (const char *p, mode_t m), (p, m))
WRAP("mkdirat", d, p, int, mkdirat, (int d, const char *p, mode_t m), (d, p, m))
WRAP("unlink", AT_FDCWD, p, int, unlink, (const char *p), (p))
WRAP("unlinkat", d, p, int, unlinkat, (int d, const char *p, int f), (d, p, f))
WRAP("rmdir", AT_FDCWD, p, int, rmdir, (const char *p), (p))
WRAP("rename", AT_FDCWD, p, int, rename, (const char *p, const char *q), (p, q))
WRAP("renameat", d, p, int, renameat, (int d, const char *p, int e, const char *q), (d, p, e, q))
WRAP("renameat2", d, p, int, renameat2, (int d, const char *p, int e, const char *q, unsigned f), (d, p, e, q, f))
WRAP("link", AT_FDCWD, p, int, link, (const char *p, const char *q), (p, q))
WRAP("linkat", d, p, int, linkat, (int d, const char *p, int e, const char *q, int f), (d, p, e, q, f))
WRAP("symlink", AT_FDCWD, q, int, symlink, (const char *p, const char *q), (p, q))
WRAP("symlinkat", d, q, int, symlinkat, (const char *p, int d, const char *q), (p, d, q))
WRAP("readlink", AT_FDCWD, p, ssize_t, readlink, (const char *p, char *b, size_t n), (p, b, n))
WRAP("readlinkat", d, p, ssize_t, readlinkat, (int d, const char *p, char *b, size_t n), (d, p, b, n))
WRAP("mknodat", AT_FDCWD, p, int, mknod, (const char *p, mode_t m, dev_t v), (p, m, v))
WRAP("mknodat", d, p, int, mknodat, (int d, const char *p, mode_t m, dev_t v), (d, p, m, v))
WRAP("mknodat", AT_FDCWD, p, int, mkfifo, (const char *p, mode_t m), (p, m))
WRAP("mknodat", d, p, int, mkfifoat, (int d, const char *p, mode_t m), (d, p, m))
WRAP("access", AT_FDCWD, p, int, access, (const char *p, int m), (p, m))
WRAP("faccessat2", d, p, int, faccessat, (int d, const char *p, int m, int f), (d, p, m, f))

/* Owner, mode, times. */
WRAP("chown", AT_FDCWD, p, int, chown, (const char *p, uid_t u, gid_t g), (p, u, g))
WRAP("lchown", AT_FDCWD, p, int, lchown, (const char *p, uid_t u, gid_t g), (p, u, g))
WRAP("fchown", fd, NULL, int, fchown, (int fd, uid_t u, gid_t g), (fd, u, g))
WRAP("fchownat", d, p, int, fchownat, (int d, const char *p, uid_t u, gid_t g, int f), (d, p, u, g, f))
WRAP("chmod", AT_FDCWD, p, int, chmod, (const char *p, mode_t m), (p, m))
WRAP("fchmodat", AT_FDCWD, p, int, lchmod, (const char *p, mode_t m), (p, m))
WRAP("fchmod", fd, NULL, int, fchmod, (int fd, mode_t m), (fd, m))
WRAP("fchmodat", d, p, int, fchmodat, (int d, const char *p, mode_t m, int f), (d, p, m, f))
WRAP("utimensat", d, p, int, utimensat, (int d, const char *p, const struct timespec t[2], int f), (d, p, t, f))
WRAP("utimensat", fd, NULL, int, futimens, (int fd, const struct timespec t[2]), (fd, t))
WRAP("utimensat", AT_FDCWD, p, int, utimes, (const char *p, const struct timeval t[2]), (p, t))
WRAP("utimensat", AT_FDCWD, p, int, lutimes, (const char *p, const struct timeval t[2]), (p, t))
WRAP("utimensat", fd, NULL, int, futimes, (int fd, const struct timeval t[2]), (fd, t))
WRAP("utimensat", d, p, int, futimesat, (int d, const char *p, const struct timeval t[2]), (d, p, t))
WRAP("utimensat", AT_FDCWD, p, int, utime, (const char *p, const struct utimbuf *t), (p, t))

/* Extended attributes (ACLs and SELinux labels too: libacl, libattr and
 * libselinux call these through the PLT). */
WRAP("getxattr", AT_FDCWD, p, ssize_t, getxattr, (const char *p, const char *n, void *v, size_t s), (p, n, v, s))
WRAP("lgetxattr", AT_FDCWD, p, ssize_t, lgetxattr, (const char *p, const char *n, void *v, size_t s), (p, n, v, s))
WRAP("fgetxattr", fd, NULL, ssize_t, fgetxattr, (int fd, const char *n, void *v, size_t s), (fd, n, v, s))
WRAP("setxattr", AT_FDCWD, p, int, setxattr, (const char *p, const char *n, const void *v, size_t s, int f), (p, n, v, s, f))
WRAP("lsetxattr", AT_FDCWD, p, int, lsetxattr, (const char *p, const char *n, const void *v, size_t s, int f), (p, n, v, s, f))
WRAP("fsetxattr", fd, NULL, int, fsetxattr, (int fd, const char *n, const void *v, size_t s, int f), (fd, n, v, s, f))
WRAP("listxattr", AT_FDCWD, p, ssize_t, listxattr, (const char *p, char *l, size_t s), (p, l, s))
WRAP("llistxattr", AT_FDCWD, p, ssize_t, llistxattr, (const char *p, char *l, size_t s), (p, l, s))
WRAP("flistxattr", fd, NULL, ssize_t, flistxattr, (int fd, char *l, size_t s), (fd, l, s))
WRAP("removexattr", AT_FDCWD, p, int, removexattr, (const char *p, const char *n), (p, n))
WRAP("lremovexattr", AT_FDCWD, p, int, lremovexattr, (const char *p, const char *n), (p, n))
WRAP("fremovexattr", fd, NULL, int, fremovexattr, (int fd, const char *n), (fd, n))

/* Sockets, pipes and event descriptors are local too (MPI and PMIx make
 * dozens, and close and ioctl them): marked as system files. */
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#define LOCAL(name, params, args) \
    int name params { REAL(name); return opened(real args, 1); }
LOCAL(socket, (int d, int t, int p), (d, t, p))
LOCAL(accept, (int s, struct sockaddr *a, socklen_t *l), (s, a, l))
LOCAL(accept4, (int s, struct sockaddr *a, socklen_t *l, int f), (s, a, l, f))
LOCAL(eventfd, (unsigned int v, int f), (v, f))
LOCAL(epoll_create, (int n), (n))
LOCAL(epoll_create1, (int f), (f))
#define PAIR(name, params, args) \
    int name params { \
        REAL(name); \
        int r = real args; \
        if (!r) { opened(v[0], 1); opened(v[1], 1); } \
        return r; \
    }
PAIR(pipe, (int v[2]), (v))
PAIR(pipe2, (int v[2], int f), (v, f))
PAIR(socketpair, (int d, int t, int p, int v[2]), (d, t, p, v))

/* FS_IOC_GETFLAGS, FS_IOC_FSGETXATTR, FICLONE...: inode attributes, a round
 * trip on Lustre. glibc's own ioctls (isatty, tcgetattr) do not come here. */
int ioctl(int fd, unsigned long req, ...) {
    REAL(ioctl);
    va_list ap; va_start(ap, req); void *arg = va_arg(ap, void *); va_end(ap);
    slow("ioctl", fd, NULL);
    return real(fd, req, arg);
}

/* rustix on glibc makes some calls through syscall(2): openat2 (lmpi's
 * directory opens), getdents64, fchown, fchmod, copy_file_range, and any
 * other it has no libc function for. fd, path: the indexes of the
 * arguments that give the descriptor and the path, or -1; open: it returns
 * a descriptor. */
static const struct { long nr; const char *name; int fd, path, open; } SYSCALLS[] = {
#ifdef SYS_openat2
    {SYS_openat2, "openat2", 0, 1, 1},
#endif
    {SYS_openat, "openat", 0, 1, 1}, {SYS_open_by_handle_at, "open_by_handle_at", 0, -1, 1},
    {SYS_getdents64, "getdents64", 0, -1, 0}, {SYS_close, "close", 0, -1, 0},
    {SYS_fchown, "fchown", 0, -1, 0}, {SYS_fchmod, "fchmod", 0, -1, 0},
    {SYS_fchownat, "fchownat", 0, 1, 0}, {SYS_fchmodat, "fchmodat", 0, 1, 0},
    {SYS_statx, "statx", 0, 1, 0}, {SYS_newfstatat, "newfstatat", 0, 1, 0},
    {SYS_fstat, "newfstatat", 0, -1, 0}, {SYS_utimensat, "utimensat", 0, 1, 0},
    {SYS_mkdirat, "mkdirat", 0, 1, 0}, {SYS_unlinkat, "unlinkat", 0, 1, 0},
    {SYS_renameat, "renameat", 0, 1, 0}, {SYS_renameat2, "renameat2", 0, 1, 0},
    {SYS_linkat, "linkat", 0, 1, 0}, {SYS_symlinkat, "symlinkat", 1, 2, 0},
    {SYS_readlinkat, "readlinkat", 0, 1, 0}, {SYS_mknodat, "mknodat", 0, 1, 0},
    {SYS_name_to_handle_at, "name_to_handle_at", 0, 1, 0}, {SYS_ioctl, "ioctl", 0, -1, 0},
    {SYS_getxattr, "getxattr", -1, 0, 0}, {SYS_lgetxattr, "lgetxattr", -1, 0, 0},
    {SYS_fgetxattr, "fgetxattr", 0, -1, 0}, {SYS_setxattr, "setxattr", -1, 0, 0},
    {SYS_lsetxattr, "lsetxattr", -1, 0, 0}, {SYS_fsetxattr, "fsetxattr", 0, -1, 0},
    {SYS_listxattr, "listxattr", -1, 0, 0}, {SYS_llistxattr, "llistxattr", -1, 0, 0},
    {SYS_flistxattr, "flistxattr", 0, -1, 0}, {SYS_removexattr, "removexattr", -1, 0, 0},
    {SYS_lremovexattr, "lremovexattr", -1, 0, 0}, {SYS_fremovexattr, "fremovexattr", 0, -1, 0},
};

long syscall(long n, ...) {
    REAL(syscall);
    va_list ap; va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    int opens = 0, system = 0;
    for (size_t i = 0; i < sizeof SYSCALLS / sizeof SYSCALLS[0]; i++) {
        if (SYSCALLS[i].nr != n) continue;
        int fd = SYSCALLS[i].fd >= 0 ? (int)a[SYSCALLS[i].fd] : AT_FDCWD;
        const char *path = SYSCALLS[i].path >= 0 ? (const char *)a[SYSCALLS[i].path] : NULL;
        system = slow(SYSCALLS[i].name, fd, path);
        opens = SYSCALLS[i].open;
        break;
    }
#ifdef SYS_openat2
    if (n == SYS_openat2 && matches("LMPI_FAULT_EIO", (const char *)a[1])) {
        errno = fault_errno();
        return -1;
    }
#endif
#ifdef SYS_copy_file_range
    if (n == SYS_copy_file_range) maybe_slow_write();
#endif
    if (n == SYS_close) mark_fd((int)a[0], 0);
    long r = real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (opens && r >= 0) mark_fd((int)r, system);
    return r;
}
