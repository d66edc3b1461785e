//! Generates allowlisted bindings against the system libfabric (found with
//! pkg-config) and compiles the wrappers for its `static inline` calls.

use std::env;
use std::path::PathBuf;

fn main() {
    let lib = pkg_config::Config::new()
        .atleast_version("1.10")
        // Headers only: libfabric is dlopen'ed at run time (see csrc/wrap.c).
        .cargo_metadata(false)
        .probe("libfabric")
        .unwrap_or_else(|e| {
            panic!(
                "libfabric not found by pkg-config ({e}). On Debian/Ubuntu install it with: \
                 apt-get install libfabric-dev pkg-config libclang-dev"
            )
        });
    let mut build = cc::Build::new();
    build.file("csrc/wrap.c").warnings(true);
    for p in &lib.include_paths {
        build.include(p);
    }
    build.compile("gkfs_fi_wrap");
    println!("cargo:rustc-link-lib=dl");
    println!("cargo:rerun-if-changed=csrc/wrap.c");

    let mut b = bindgen::Builder::default()
        .header_contents(
            "fi.h",
            "#include <rdma/fabric.h>\n#include <rdma/fi_domain.h>\n#include <rdma/fi_endpoint.h>\n\
             #include <rdma/fi_cm.h>\n#include <rdma/fi_eq.h>\n#include <rdma/fi_tagged.h>\n\
             #include <rdma/fi_rma.h>\n#include <rdma/fi_errno.h>\n#include <sys/types.h>\n\
             const char *gkfs_fi_load(void);\n\
             int gkfs_fi_getinfo(uint32_t v, const char *node, const char *service, uint64_t flags, const struct fi_info *hints, struct fi_info **info);\n\
             void gkfs_fi_freeinfo(struct fi_info *info);\n\
             int gkfs_fi_fabric(struct fi_fabric_attr *attr, struct fid_fabric **f, void *ctx);\n\
             const char *gkfs_fi_strerror(int code);\n\
             struct fi_info *gkfs_fi_allocinfo(void);\n\
             int gkfs_fi_close(struct fid *fid);\n\
             int gkfs_fi_domain(struct fid_fabric *f, struct fi_info *i, struct fid_domain **d, void *c);\n\
             int gkfs_fi_endpoint(struct fid_domain *d, struct fi_info *i, struct fid_ep **ep, void *c);\n\
             int gkfs_fi_cq_open(struct fid_domain *d, struct fi_cq_attr *a, struct fid_cq **cq, void *c);\n\
             int gkfs_fi_av_open(struct fid_domain *d, struct fi_av_attr *a, struct fid_av **av, void *c);\n\
             int gkfs_fi_ep_bind(struct fid_ep *ep, struct fid *b, uint64_t flags);\n\
             int gkfs_fi_enable(struct fid_ep *ep);\n\
             int gkfs_fi_getname(struct fid *fid, void *addr, size_t *len);\n\
             int gkfs_fi_av_insert(struct fid_av *av, const void *addr, size_t n, fi_addr_t *out, uint64_t flags);\n\
             ssize_t gkfs_fi_tsend(struct fid_ep *ep, const void *buf, size_t len, void *desc, fi_addr_t dest, uint64_t tag, void *ctx);\n\
             ssize_t gkfs_fi_trecv(struct fid_ep *ep, void *buf, size_t len, void *desc, fi_addr_t src, uint64_t tag, uint64_t ignore, void *ctx);\n\
             ssize_t gkfs_fi_read(struct fid_ep *ep, void *buf, size_t len, void *desc, fi_addr_t src, uint64_t addr, uint64_t key, void *ctx);\n\
             ssize_t gkfs_fi_write(struct fid_ep *ep, const void *buf, size_t len, void *desc, fi_addr_t dest, uint64_t addr, uint64_t key, void *ctx);\n\
             ssize_t gkfs_fi_cancel(struct fid_ep *ep, void *ctx);\n\
             ssize_t gkfs_fi_cq_read(struct fid_cq *cq, void *buf, size_t n);\n\
             ssize_t gkfs_fi_cq_sread(struct fid_cq *cq, void *buf, size_t n, int timeout);\n\
             ssize_t gkfs_fi_cq_readerr(struct fid_cq *cq, struct fi_cq_err_entry *e);\n\
             const char *gkfs_fi_cq_strerror(struct fid_cq *cq, int prov_errno, const void *data, char *buf, size_t len);\n\
             int gkfs_fi_cq_signal(struct fid_cq *cq);\n\
             int gkfs_fi_mr_reg(struct fid_domain *d, const void *buf, size_t len, uint64_t access, uint64_t key, struct fid_mr **mr);\n\
             void *gkfs_fi_mr_desc(struct fid_mr *mr);\n\
             uint64_t gkfs_fi_mr_key(struct fid_mr *mr);\n\
             struct fid *gkfs_fid_of_ep(struct fid_ep *ep);\n\
             struct fid *gkfs_fid_of_cq(struct fid_cq *cq);\n\
             struct fid *gkfs_fid_of_av(struct fid_av *av);\n\
             struct fid *gkfs_fid_of_mr(struct fid_mr *mr);\n\
             struct fid *gkfs_fid_of_domain(struct fid_domain *d);\n\
             struct fid *gkfs_fid_of_fabric(struct fid_fabric *f);\n",
        )
        .allowlist_function("gkfs_fi_.*")
        .allowlist_function("gkfs_fid_of_.*")
        .allowlist_type("fi_cq_tagged_entry|fi_cq_err_entry|fi_context2|fi_info|fi_cq_attr|fi_av_attr|fi_ep_type|fi_cq_format|fi_wait_obj|fi_av_type|fi_threading|fi_progress|fi_resource_mgmt")
        .allowlist_var("FI_.*")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false);
    for p in &lib.include_paths {
        b = b.clang_arg(format!("-I{}", p.display()));
    }
    let bindings = b
        .generate()
        .expect("bindgen failed on the libfabric headers");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("cannot write bindings");
}
