//! Request handlers, by domain: metadata, data, management. The [`Handler`] impl
//! below only routes; each handler is a plain function of the state and the request.

mod data;
mod meta;
pub mod mgmt;

use gkfs_proto::msg::*;

use crate::server::Origin;
use crate::state::State;

impl Handler for State {
    type Ctx = Origin;
    fn ping(&self, _: &Origin, _: PingReq) -> Result<PingReply, RemoteError> {
        mgmt::ping(self)
    }
    fn stats(&self, _: &Origin, _: StatsReq) -> Result<StatsReply, RemoteError> {
        mgmt::stats(self)
    }
    fn create(&self, _: &Origin, r: CreateReq) -> Result<CreateReply, RemoteError> {
        meta::create(self, r)
    }
    fn stat(&self, _: &Origin, r: StatReq) -> Result<StatReply, RemoteError> {
        meta::stat(self, r)
    }
    fn remove(&self, _: &Origin, r: RemoveReq) -> Result<RemoveReply, RemoteError> {
        meta::remove(self, r)
    }
    fn update_size(&self, _: &Origin, r: UpdateSizeReq) -> Result<UpdateSizeReply, RemoteError> {
        meta::update_size(self, r)
    }
    fn get_size(&self, _: &Origin, r: GetSizeReq) -> Result<GetSizeReply, RemoteError> {
        meta::get_size(self, r)
    }
    fn truncate(&self, _: &Origin, r: TruncateReq) -> Result<TruncateReply, RemoteError> {
        meta::truncate(self, r)
    }
    fn read_dir(&self, _: &Origin, r: ReadDirReq) -> Result<ReadDirReply, RemoteError> {
        meta::read_dir(self, r)
    }
    fn put_record(&self, _: &Origin, r: PutRecordReq) -> Result<PutRecordReply, RemoteError> {
        meta::put_record(self, r)
    }
    fn scan_prefix(&self, _: &Origin, r: ScanPrefixReq) -> Result<ScanPrefixReply, RemoteError> {
        meta::scan_prefix(self, r)
    }
    fn write_chunks(
        &self,
        from: &Origin,
        r: WriteChunksReq,
    ) -> Result<WriteChunksReply, RemoteError> {
        data::write_chunks(self, from, r)
    }
    fn read_chunks(&self, from: &Origin, r: ReadChunksReq) -> Result<ReadChunksReply, RemoteError> {
        data::read_chunks(self, from, r)
    }
    fn truncate_chunks(&self, _: &Origin, r: TruncateChunksReq) -> Result<Empty, RemoteError> {
        data::truncate_chunks(self, r)
    }
    fn remove_chunks(&self, _: &Origin, r: RemoveChunksReq) -> Result<Empty, RemoteError> {
        data::remove_chunks(self, r)
    }
    fn statfs(&self, _: &Origin, _: StatfsReq) -> Result<StatfsReply, RemoteError> {
        mgmt::statfs(self)
    }
    fn set_attr(&self, _: &Origin, r: SetAttrReq) -> Result<StatReply, RemoteError> {
        meta::set_attr(self, r)
    }
    fn metrics(&self, _: &Origin, _: MetricsReq) -> Result<MetricsReply, RemoteError> {
        mgmt::metrics(self)
    }
    fn report_unsupported(
        &self,
        _: &Origin,
        r: ReportUnsupportedReq,
    ) -> Result<Empty, RemoteError> {
        mgmt::report_unsupported(self, r)
    }
    fn relay(&self, from: &Origin, r: RelayReq) -> Result<RelayReply, RemoteError> {
        match from {
            Origin::Local { .. } => mgmt::relay(self, r),
            // Only for processes on this node: never a hop for another node's traffic.
            Origin::Fabric(_) => Err(RemoteError::new(
                gkfs_proto::Errno::EPERM,
                "relays only serve the node-local socket",
            )),
        }
    }
    fn adjust_links(&self, _: &Origin, r: AdjustLinksReq) -> Result<AdjustLinksReply, RemoteError> {
        meta::adjust_links(self, r)
    }
    fn lock(&self, from: &Origin, r: LockReq) -> Result<LockReply, RemoteError> {
        let peer = match from {
            Origin::Local { pid, .. } => *pid,
            Origin::Fabric(_) => None,
        };
        Ok(self.locks.apply(&r, std::time::Instant::now(), peer)?)
    }
    fn lock_lease(&self, _: &Origin, r: LockLeaseReq) -> Result<LockLeaseReply, RemoteError> {
        let held = self
            .locks
            .lease(&r.owners, r.release, &r.path, std::time::Instant::now());
        Ok(LockLeaseReply { held })
    }
}
