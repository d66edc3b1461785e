/* Out-of-line wrappers for the libfabric calls gkfs uses that are `static inline`
 * in the headers (they jump through provider ops tables, so Rust cannot link them). */
#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_tagged.h>
#include <rdma/fi_rma.h>
#include <rdma/fi_errno.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

/* libfabric itself is loaded with dlopen on first use, not linked: a process that
 * loads gkfs code (the preload library goes into every process of a job) but never
 * opens an endpoint pays nothing, and distribution builds of libfabric run slow
 * constructors (Debian's pulls in PSM libraries that calibrate timers for ~200 ms).
 * Only the five exported entry points are needed; everything else goes through the
 * ops tables of the objects they return. */
#define GKFS_LIBFABRIC "libfabric.so.1"

static struct {
    int (*getinfo)(uint32_t, const char *, const char *, uint64_t,
                   const struct fi_info *, struct fi_info **);
    void (*freeinfo)(struct fi_info *);
    struct fi_info *(*dupinfo)(const struct fi_info *);
    int (*fabric)(struct fi_fabric_attr *, struct fid_fabric **, void *);
    const char *(*strerror)(int);
    char error[512];
    int ok;
} lib;
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void load_once(void) {
    void *h = dlopen(GKFS_LIBFABRIC, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(lib.error, sizeof lib.error, "%s", dlerror());
        return;
    }
    lib.getinfo = dlsym(h, "fi_getinfo");
    lib.freeinfo = dlsym(h, "fi_freeinfo");
    lib.dupinfo = dlsym(h, "fi_dupinfo");
    lib.fabric = dlsym(h, "fi_fabric");
    lib.strerror = dlsym(h, "fi_strerror");
    if (!lib.getinfo || !lib.freeinfo || !lib.dupinfo || !lib.fabric || !lib.strerror) {
        snprintf(lib.error, sizeof lib.error, "%s lacks the fi_getinfo/fi_fabric entry points",
                 GKFS_LIBFABRIC);
        return;
    }
    lib.ok = 1;
}

/* Loads libfabric once; returns NULL on success, else a description of the failure. */
const char *gkfs_fi_load(void) {
    pthread_once(&lib_once, load_once);
    return lib.ok ? NULL : lib.error;
}

int gkfs_fi_getinfo(uint32_t v, const char *node, const char *service, uint64_t flags,
                    const struct fi_info *hints, struct fi_info **info) {
    return lib.ok ? lib.getinfo(v, node, service, flags, hints, info) : -FI_ENOSYS;
}
void gkfs_fi_freeinfo(struct fi_info *info) { if (lib.ok) lib.freeinfo(info); }
int gkfs_fi_fabric(struct fi_fabric_attr *attr, struct fid_fabric **f, void *ctx) {
    return lib.ok ? lib.fabric(attr, f, ctx) : -FI_ENOSYS;
}
const char *gkfs_fi_strerror(int code) {
    return lib.ok ? lib.strerror(code) : "libfabric is not loaded";
}
struct fi_info *gkfs_fi_allocinfo(void) { return lib.ok ? lib.dupinfo(NULL) : NULL; }
int gkfs_fi_close(struct fid *fid) { return fi_close(fid); }
int gkfs_fi_domain(struct fid_fabric *f, struct fi_info *i, struct fid_domain **d, void *c) { return fi_domain(f, i, d, c); }
int gkfs_fi_endpoint(struct fid_domain *d, struct fi_info *i, struct fid_ep **ep, void *c) { return fi_endpoint(d, i, ep, c); }
int gkfs_fi_cq_open(struct fid_domain *d, struct fi_cq_attr *a, struct fid_cq **cq, void *c) { return fi_cq_open(d, a, cq, c); }
int gkfs_fi_av_open(struct fid_domain *d, struct fi_av_attr *a, struct fid_av **av, void *c) { return fi_av_open(d, a, av, c); }
int gkfs_fi_ep_bind(struct fid_ep *ep, struct fid *b, uint64_t flags) { return fi_ep_bind(ep, b, flags); }
int gkfs_fi_enable(struct fid_ep *ep) { return fi_enable(ep); }
int gkfs_fi_getname(struct fid *fid, void *addr, size_t *len) { return fi_getname(fid, addr, len); }
int gkfs_fi_av_insert(struct fid_av *av, const void *addr, size_t n, fi_addr_t *out, uint64_t flags) { return fi_av_insert(av, addr, n, out, flags, NULL); }
ssize_t gkfs_fi_tsend(struct fid_ep *ep, const void *buf, size_t len, void *desc, fi_addr_t dest, uint64_t tag, void *ctx) { return fi_tsend(ep, buf, len, desc, dest, tag, ctx); }
ssize_t gkfs_fi_trecv(struct fid_ep *ep, void *buf, size_t len, void *desc, fi_addr_t src, uint64_t tag, uint64_t ignore, void *ctx) { return fi_trecv(ep, buf, len, desc, src, tag, ignore, ctx); }
ssize_t gkfs_fi_read(struct fid_ep *ep, void *buf, size_t len, void *desc, fi_addr_t src, uint64_t addr, uint64_t key, void *ctx) { return fi_read(ep, buf, len, desc, src, addr, key, ctx); }
ssize_t gkfs_fi_write(struct fid_ep *ep, const void *buf, size_t len, void *desc, fi_addr_t dest, uint64_t addr, uint64_t key, void *ctx) { return fi_write(ep, buf, len, desc, dest, addr, key, ctx); }
ssize_t gkfs_fi_cancel(struct fid_ep *ep, void *ctx) { return fi_cancel(&ep->fid, ctx); }
ssize_t gkfs_fi_cq_read(struct fid_cq *cq, void *buf, size_t n) { return fi_cq_read(cq, buf, n); }
ssize_t gkfs_fi_cq_sread(struct fid_cq *cq, void *buf, size_t n, int timeout) { return fi_cq_sread(cq, buf, n, NULL, timeout); }
ssize_t gkfs_fi_cq_readerr(struct fid_cq *cq, struct fi_cq_err_entry *e) { return fi_cq_readerr(cq, e, 0); }
const char *gkfs_fi_cq_strerror(struct fid_cq *cq, int prov_errno, const void *data, char *buf, size_t len) { return fi_cq_strerror(cq, prov_errno, data, buf, len); }
int gkfs_fi_cq_signal(struct fid_cq *cq) { return fi_cq_signal(cq); }
int gkfs_fi_mr_reg(struct fid_domain *d, const void *buf, size_t len, uint64_t access, uint64_t key, struct fid_mr **mr) { return fi_mr_reg(d, buf, len, access, 0, key, 0, mr, NULL); }
void *gkfs_fi_mr_desc(struct fid_mr *mr) { return fi_mr_desc(mr); }
uint64_t gkfs_fi_mr_key(struct fid_mr *mr) { return fi_mr_key(mr); }
struct fid *gkfs_fid_of_ep(struct fid_ep *ep) { return &ep->fid; }
struct fid *gkfs_fid_of_cq(struct fid_cq *cq) { return &cq->fid; }
struct fid *gkfs_fid_of_av(struct fid_av *av) { return &av->fid; }
struct fid *gkfs_fid_of_mr(struct fid_mr *mr) { return &mr->fid; }
struct fid *gkfs_fid_of_domain(struct fid_domain *d) { return &d->fid; }
struct fid *gkfs_fid_of_fabric(struct fid_fabric *f) { return &f->fid; }
