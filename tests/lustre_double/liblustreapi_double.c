/* A test double of liblustreapi for lmpi's tests: the same symbols and
 * signatures as the real library (the subset lmpi uses), keeping layouts and
 * MDT indices in user.* xattrs of an ordinary filesystem. It claims Lustre
 * only below the colon-separated prefixes in $LUSTRE_DOUBLE_ROOTS; elsewhere
 * it fails with ENOTTY, as the real library does off Lustre.
 *
 * Layout xattr "trusted.lov" (as text, not Lustre's binary lov_user_md):
 * components separated by ';', each "start,end,stripe_count,stripe_size,pattern,pool".
 * MDT xattr "trusted.lmv": decimal index, set by llapi_dir_create_pool;
 * a directory without one is on its parent's MDT (0 at a root). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

/* The names real Lustre uses (root only), so lmpi treats them as Lustre's own. */
#define LAYOUT_XATTR "trusted.lov"
#define MDT_XATTR "trusted.lmv"
#define LLAPI_LAYOUT_INVALID 0x1000000000000001ULL
#define LLAPI_LAYOUT_DEFAULT (LLAPI_LAYOUT_INVALID + 1)
#define MAXCOMP 16

struct comp { uint64_t start, end, count, size, pattern; char pool[16]; };
struct llapi_layout { int n, cur; struct comp c[MAXCOMP]; };

static int claimed(const char *path) {
    const char *roots = getenv("LUSTRE_DOUBLE_ROOTS");
    char real[PATH_MAX];
    if (!roots || !path) return 0;
    if (!realpath(path, real)) {
        /* A path being created: judge by its parent. */
        char tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s", path);
        char *slash = strrchr(tmp, '/');
        if (!slash) return 0;
        *slash = 0;
        if (!realpath(tmp[0] ? tmp : "/", real)) return 0;
    }
    char buf[4096], *save = NULL;
    snprintf(buf, sizeof buf, "%s", roots);
    /* strtok_r: lmpi's threads call this at once, and strtok's one saved
     * position made a claimed path look unclaimed now and then (ENOTTY). */
    for (char *tok = strtok_r(buf, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
        size_t n = strlen(tok);
        if (n && strncmp(real, tok, n) == 0 && (real[n] == 0 || real[n] == '/')) return 1;
    }
    return 0;
}

static int fd_path(int fd, char *out, size_t len) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, len - 1);
    if (n < 0) return -1;
    out[n] = 0;
    return 0;
}

struct llapi_layout *llapi_layout_alloc(void) {
    struct llapi_layout *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->n = 1;
    l->c[0].end = UINT64_MAX;
    l->c[0].count = l->c[0].size = l->c[0].pattern = LLAPI_LAYOUT_DEFAULT;
    return l;
}

void llapi_layout_free(struct llapi_layout *l) { free(l); }

static struct llapi_layout *parse(const char *s) {
    const char *text = s;
    struct llapi_layout *l = llapi_layout_alloc();
    if (!l) return NULL;
    l->n = 0;
    while (*s && l->n < MAXCOMP) {
        struct comp *c = &l->c[l->n];
        unsigned long long a, b, cnt, sz, pat;
        int used = 0;
        if (sscanf(s, "%llu,%llu,%llu,%llu,%llu,%n", &a, &b, &cnt, &sz, &pat, &used) < 5) break;
        c->start = a; c->end = b; c->count = cnt; c->size = sz; c->pattern = pat;
        s += used;
        size_t k = 0;
        while (*s && *s != ';' && k < 15) c->pool[k++] = *s++;
        c->pool[k] = 0;
        while (*s && *s != ';') s++;
        if (*s == ';') s++;
        l->n++;
    }
    if (l->n == 0) {
        /* Text that is not a layout: a damaged one, reported as the real library would. */
        if (*text) { free(l); errno = EINVAL; return NULL; }
        l->n = 1;
    }
    return l;
}

static int serialize(const struct llapi_layout *l, char *out, size_t len) {
    size_t off = 0;
    for (int i = 0; i < l->n; i++) {
        const struct comp *c = &l->c[i];
        int w = snprintf(out + off, len - off, "%s%llu,%llu,%llu,%llu,%llu,%s", i ? ";" : "",
                         (unsigned long long)c->start, (unsigned long long)c->end, (unsigned long long)c->count,
                         (unsigned long long)c->size, (unsigned long long)c->pattern, c->pool);
        if (w < 0 || (size_t)w >= len - off) return -1;
        off += w;
    }
    return (int)off;
}

static struct llapi_layout *from_xattr(ssize_t n, const char *buf, int is_dir) {
    if (n < 0) {
        if (errno == ENODATA) {
            /* No layout of its own: a file has the filesystem default (1 x 1 MiB);
             * a directory has no default of its own (all LLAPI_LAYOUT_DEFAULT). */
            struct llapi_layout *l = llapi_layout_alloc();
            if (l && !is_dir) { l->c[0].count = 1; l->c[0].size = 1 << 20; l->c[0].pattern = 0; }
            return l;
        }
        return NULL;
    }
    char tmp[4096];
    memcpy(tmp, buf, (size_t)n);
    tmp[n] = 0;
    return parse(tmp);
}

struct llapi_layout *llapi_layout_get_by_fd(int fd, uint32_t flags) {
    char path[PATH_MAX], buf[4096];
    (void)flags;
    if (fd_path(fd, path, sizeof path) < 0 || !claimed(path)) { errno = ENOTTY; return NULL; }
    struct stat st;
    int is_dir = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
    return from_xattr(fgetxattr(fd, LAYOUT_XATTR, buf, sizeof buf - 1), buf, is_dir);
}

struct llapi_layout *llapi_layout_get_by_path(const char *path, uint32_t flags) {
    char buf[4096];
    (void)flags;
    if (!claimed(path)) { errno = ENOTTY; return NULL; }
    struct stat st;
    int is_dir = lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
    return from_xattr(lgetxattr(path, LAYOUT_XATTR, buf, sizeof buf - 1), buf, is_dir);
}

#define GETSET(field, name) \
    int llapi_layout_##name##_get(const struct llapi_layout *l, uint64_t *v) { \
        if (!l || !v) { errno = EINVAL; return -1; } *v = l->c[l->cur].field; return 0; } \
    int llapi_layout_##name##_set(struct llapi_layout *l, uint64_t v) { \
        if (!l) { errno = EINVAL; return -1; } l->c[l->cur].field = v; return 0; }
GETSET(count, stripe_count)
GETSET(size, stripe_size)
GETSET(pattern, pattern)

int llapi_layout_pool_name_get(const struct llapi_layout *l, char *dst, size_t n) {
    if (!l || !dst || n == 0) { errno = EINVAL; return -1; }
    snprintf(dst, n, "%s", l->c[l->cur].pool);
    return 0;
}

int llapi_layout_pool_name_set(struct llapi_layout *l, const char *name) {
    if (!l || !name || strlen(name) > 15) { errno = EINVAL; return -1; }
    snprintf(l->c[l->cur].pool, sizeof l->c[l->cur].pool, "%s", name);
    return 0;
}

int llapi_layout_comp_extent_get(const struct llapi_layout *l, uint64_t *s, uint64_t *e) {
    if (!l || !s || !e) { errno = EINVAL; return -1; }
    *s = l->c[l->cur].start; *e = l->c[l->cur].end; return 0;
}

int llapi_layout_comp_extent_set(struct llapi_layout *l, uint64_t s, uint64_t e) {
    if (!l || s > e) { errno = EINVAL; return -1; }
    l->c[l->cur].start = s; l->c[l->cur].end = e; return 0;
}

int llapi_layout_comp_add(struct llapi_layout *l) {
    if (!l || l->n >= MAXCOMP) { errno = EINVAL; return -1; }
    struct comp *prev = &l->c[l->n - 1];
    struct comp *c = &l->c[l->n];
    memset(c, 0, sizeof *c);
    c->start = prev->end; c->end = UINT64_MAX;
    c->count = c->size = c->pattern = LLAPI_LAYOUT_DEFAULT;
    l->cur = l->n++;
    return 0;
}

int llapi_layout_comp_use(struct llapi_layout *l, uint32_t pos) {
    if (!l) { errno = EINVAL; return -1; }
    switch (pos) {
    case 1: l->cur = 0; return 0;
    case 2: l->cur = l->n - 1; return 0;
    case 3: if (l->cur + 1 >= l->n) return 1; l->cur++; return 0;
    case 4: if (l->cur == 0) return 1; l->cur--; return 0;
    default: errno = EINVAL; return -1;
    }
}

int llapi_layout_file_open(const char *path, int flags, mode_t mode, const struct llapi_layout *l) {
    if (l && !claimed(path)) { errno = ENOTTY; return -1; }
    int fd = open(path, flags, mode);
    if (fd < 0 && errno == EISDIR) fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0 || !l) return fd;
    char buf[4096];
    int n = serialize(l, buf, sizeof buf);
    if (n < 0 || fsetxattr(fd, LAYOUT_XATTR, buf, (size_t)n, 0) < 0) {
        int e = errno; close(fd); errno = n < 0 ? EINVAL : e; return -1;
    }
    return fd;
}

int llapi_layout_file_create(const char *path, int flags, int mode, const struct llapi_layout *l) {
    return llapi_layout_file_open(path, flags | O_CREAT | O_EXCL, (mode_t)mode, l);
}

int llapi_dir_create_pool(const char *name, int flags, int offset, int count, int pattern, const char *pool) {
    (void)count; (void)pattern; (void)pool;
    if (!claimed(name)) return -ENOTTY;
    if (mkdir(name, flags ? (mode_t)flags : 0755) < 0) return -errno;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d", offset);
    if (setxattr(name, MDT_XATTR, buf, (size_t)n, 0) < 0) return -errno;
    return 0;
}

int llapi_file_fget_mdtidx(int fd, int *mdtidx) {
    char path[PATH_MAX], buf[32];
    if (fd_path(fd, path, sizeof path) < 0 || !claimed(path)) return -ENOTTY;
    for (;;) {
        ssize_t n = getxattr(path, MDT_XATTR, buf, sizeof buf - 1);
        if (n > 0) { buf[n] = 0; *mdtidx = atoi(buf); return 0; }
        char *slash = strrchr(path, '/');
        if (!slash || slash == path || !claimed(path)) { *mdtidx = 0; return 0; }
        *slash = 0;
        if (!claimed(path)) { *mdtidx = 0; return 0; }
    }
}

/* Changelogs. $LUSTRE_DOUBLE_CHANGELOG names a directory the test writes:
 *   <mdt>.log      one record per line: "index TYPE tfid pfid name [sfid spfid sname]",
 *                  FIDs as [0xseq:0xoid:0xver], "-" for no name;
 *   <mdt>.users    the registered changelog users, one per line;
 *   <mdt>.cleared  appended by llapi_changelog_clear: "user endrec" per call.
 * Records up to the highest endrec cleared are purged (never served), as
 * on an MDT with one user. $LUSTRE_DOUBLE_FIDS names the FID map that
 * llapi_fid2path and llapi_fd2fid read: "fid path" per line, the path
 * relative to the claimed root ("/" for the root itself). */

struct lu_fid { uint64_t f_seq; uint32_t f_oid; uint32_t f_ver; };
struct changelog_rec {
    uint16_t cr_namelen, cr_flags;
    uint32_t cr_type;
    uint64_t cr_index, cr_prev, cr_time;
    struct lu_fid cr_tfid, cr_pfid;
};
struct changelog_ext_rename { struct lu_fid cr_sfid, cr_spfid; };
#define CLF_VERSION 0x1000
#define CLF_RENAME 0x2000

static const char *cl_types[] = {
    "MARK", "CREAT", "MKDIR", "HLINK", "SLINK", "MKNOD", "UNLNK", "RMDIR", "RENME", "RNMTO",
    "OPEN", "CLOSE", "LYOUT", "TRUNC", "SATTR", "XATTR", "HSM", "MTIME", "CTIME", "ATIME",
    "MIGRT", "FLRW", "RESYNC", "GXATR", "NOPEN",
};

struct cl_reader { FILE *f; long long start, purged; };

static int cl_file(const char *mdt, const char *ext, char *out, size_t len) {
    const char *dir = getenv("LUSTRE_DOUBLE_CHANGELOG");
    if (!dir || !mdt || strchr(mdt, '/')) return -1;
    snprintf(out, len, "%s/%s.%s", dir, mdt, ext);
    return 0;
}

static long long cl_purged(const char *mdt) {
    char p[PATH_MAX], user[128];
    long long end, max = 0;
    if (cl_file(mdt, "cleared", p, sizeof p) < 0) return 0;
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    while (fscanf(f, "%127s %lld", user, &end) == 2) if (end > max) max = end;
    fclose(f);
    return max;
}

int llapi_changelog_start(void **priv, int flags, const char *mdt, long long startrec) {
    char p[PATH_MAX];
    (void)flags;
    if (!priv || cl_file(mdt, "log", p, sizeof p) < 0) return -EINVAL;
    FILE *f = fopen(p, "r");
    if (!f) return -ENODEV;
    struct cl_reader *r = calloc(1, sizeof *r);
    if (!r) { fclose(f); return -ENOMEM; }
    r->f = f; r->start = startrec; r->purged = cl_purged(mdt);
    *priv = r;
    return 0;
}

int llapi_changelog_fini(void **priv) {
    if (!priv || !*priv) return -EINVAL;
    struct cl_reader *r = *priv;
    fclose(r->f);
    free(r);
    *priv = NULL;
    return 0;
}

static int parse_fid(const char *s, struct lu_fid *fid) {
    unsigned long long seq; unsigned oid, ver;
    if (sscanf(s, "[0x%llx:0x%x:0x%x]", &seq, &oid, &ver) != 3) return -1;
    fid->f_seq = seq; fid->f_oid = oid; fid->f_ver = ver;
    return 0;
}

/* One log line into a record shaped as the real library hands it out
 * (CLF_VERSION | CLF_RENAME, the name and any source name after). */
static struct changelog_rec *cl_record(const char *line) {
    long long idx;
    char type[16], t[64], p[64], name[256], s[64] = "", sp[64] = "", sname[256] = "";
    int n = sscanf(line, "%lld %15s %63s %63s %255s %63s %63s %255s", &idx, type, t, p, name, s, sp, sname);
    if (n != 5 && n != 8) return NULL;
    int kind = -1;
    for (size_t i = 0; i < sizeof cl_types / sizeof *cl_types; i++)
        if (strcmp(type, cl_types[i]) == 0) kind = (int)i;
    if (kind < 0) kind = atoi(type) > 0 ? atoi(type) : -1;
    if (kind < 0) return NULL;
    if (strcmp(name, "-") == 0) name[0] = 0;
    size_t tl = strlen(name), sl = n == 8 ? strlen(sname) : 0;
    size_t namelen = tl + (n == 8 ? 1 + sl : 0);
    size_t off = sizeof(struct changelog_rec) + sizeof(struct changelog_ext_rename);
    struct changelog_rec *r = calloc(1, off + namelen + 1);
    if (!r) return NULL;
    r->cr_namelen = (uint16_t)namelen;
    r->cr_flags = CLF_VERSION | CLF_RENAME;
    r->cr_type = (uint32_t)kind;
    r->cr_index = (uint64_t)idx;
    struct changelog_ext_rename *e = (void *)(r + 1);
    if (parse_fid(t, &r->cr_tfid) < 0 || parse_fid(p, &r->cr_pfid) < 0 ||
        (n == 8 && (parse_fid(s, &e->cr_sfid) < 0 || parse_fid(sp, &e->cr_spfid) < 0))) {
        free(r);
        return NULL;
    }
    char *nm = (char *)r + off;
    memcpy(nm, name, tl);
    if (n == 8) memcpy(nm + tl + 1, sname, sl);
    return r;
}

int llapi_changelog_recv(void *priv, struct changelog_rec **rech) {
    struct cl_reader *r = priv;
    char line[1024];
    if (!r || !rech) return -EINVAL;
    while (fgets(line, sizeof line, r->f)) {
        long long idx;
        if (line[0] == '\n' || line[0] == '#' || sscanf(line, "%lld", &idx) != 1) continue;
        if (idx < r->start || idx <= r->purged) continue;
        *rech = cl_record(line);
        return *rech ? 0 : -EINVAL;
    }
    return 1;
}

int llapi_changelog_free(struct changelog_rec **rech) {
    if (rech) { free(*rech); *rech = NULL; }
    return 0;
}

int llapi_changelog_clear(const char *mdt, const char *id, long long endrec) {
    char p[PATH_MAX], user[128];
    int known = 0;
    if (!id || cl_file(mdt, "users", p, sizeof p) < 0) return -EINVAL;
    FILE *f = fopen(p, "r");
    if (!f) return -ENOENT;
    while (fscanf(f, "%127s", user) == 1) if (strcmp(user, id) == 0) known = 1;
    fclose(f);
    if (!known) return -ENOENT;
    if (cl_file(mdt, "cleared", p, sizeof p) < 0 || !(f = fopen(p, "a"))) return -EIO;
    fprintf(f, "%s %lld\n", id, endrec);
    fclose(f);
    return 0;
}

/* The FID map's line for `fid` (match_fid) or for `path`: the other field into `out`. */
static int fid_map(const char *fid, const char *path, char *out, size_t len) {
    const char *map = getenv("LUSTRE_DOUBLE_FIDS");
    char f[64], p[PATH_MAX];
    if (!map) return -ENOENT;
    FILE *m = fopen(map, "r");
    if (!m) return -ENOENT;
    int rc = -ENOENT;
    while (fscanf(m, "%63s %4095s", f, p) == 2) {
        if ((fid && strcmp(f, fid) == 0) || (path && strcmp(p, path) == 0)) {
            snprintf(out, len, "%s", fid ? p : f);
            rc = (size_t)snprintf(NULL, 0, "%s", fid ? p : f) >= len ? -ERANGE : 0;
            break;
        }
    }
    fclose(m);
    return rc;
}

int llapi_fid2path(const char *device, const char *fidstr, char *path, int pathlen,
                   long long *recno, int *linkno) {
    (void)recno; (void)linkno;
    if (!device || !fidstr || !path || pathlen <= 0) return -EINVAL;
    if (!claimed(device)) return -ENOTTY;
    return fid_map(fidstr, NULL, path, (size_t)pathlen);
}

int llapi_fd2fid(int fd, struct lu_fid *fid) {
    char path[PATH_MAX], rel[PATH_MAX], text[64];
    if (fd_path(fd, path, sizeof path) < 0 || !claimed(path)) return -ENOTTY;
    /* Relative to the claimed root it is under. */
    const char *roots = getenv("LUSTRE_DOUBLE_ROOTS");
    char buf[4096], *save = NULL;
    snprintf(buf, sizeof buf, "%s", roots ? roots : "");
    snprintf(rel, sizeof rel, "/");
    for (char *tok = strtok_r(buf, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
        size_t n = strlen(tok);
        if (n && strncmp(path, tok, n) == 0 && (path[n] == 0 || path[n] == '/')) {
            snprintf(rel, sizeof rel, "%s", path[n] ? path + n + 1 : "/");
            break;
        }
    }
    int rc = fid_map(NULL, rel, text, sizeof text);
    if (rc < 0) return rc;
    return parse_fid(text, fid) < 0 ? -EINVAL : 0;
}
