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

struct fi_info *gkfs_fi_allocinfo(void) { return fi_allocinfo(); }
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
