//! Request handlers, by domain: metadata, data, management. The [`Handler`] impl
//! below only routes; each handler is a plain function of the state and the request.

mod data;
mod meta;
pub mod mgmt;

use gkfs_proto::msg::*;

use crate::state::State;
use gkfs_fabric::bulk::Sender;

impl Handler for State {
    type Ctx = Sender;
    fn ping(&self, _: &Sender, _: PingReq) -> Result<PingReply, RemoteError> {
        mgmt::ping(self)
    }
    fn stats(&self, _: &Sender, _: StatsReq) -> Result<StatsReply, RemoteError> {
        mgmt::stats(self)
    }
    fn create(&self, _: &Sender, r: CreateReq) -> Result<CreateReply, RemoteError> {
        meta::create(self, r)
    }
    fn stat(&self, _: &Sender, r: StatReq) -> Result<StatReply, RemoteError> {
        meta::stat(self, r)
    }
    fn remove(&self, _: &Sender, r: RemoveReq) -> Result<RemoveReply, RemoteError> {
        meta::remove(self, r)
    }
    fn update_size(&self, _: &Sender, r: UpdateSizeReq) -> Result<UpdateSizeReply, RemoteError> {
        meta::update_size(self, r)
    }
    fn get_size(&self, _: &Sender, r: GetSizeReq) -> Result<GetSizeReply, RemoteError> {
        meta::get_size(self, r)
    }
    fn truncate(&self, _: &Sender, r: TruncateReq) -> Result<TruncateReply, RemoteError> {
        meta::truncate(self, r)
    }
    fn read_dir(&self, _: &Sender, r: ReadDirReq) -> Result<ReadDirReply, RemoteError> {
        meta::read_dir(self, r)
    }
    fn put_record(&self, _: &Sender, r: PutRecordReq) -> Result<PutRecordReply, RemoteError> {
        meta::put_record(self, r)
    }
    fn scan_prefix(&self, _: &Sender, r: ScanPrefixReq) -> Result<ScanPrefixReply, RemoteError> {
        meta::scan_prefix(self, r)
    }
    fn write_chunks(
        &self,
        from: &Sender,
        r: WriteChunksReq,
    ) -> Result<WriteChunksReply, RemoteError> {
        data::write_chunks(self, from, r)
    }
    fn read_chunks(&self, from: &Sender, r: ReadChunksReq) -> Result<ReadChunksReply, RemoteError> {
        data::read_chunks(self, from, r)
    }
    fn truncate_chunks(&self, _: &Sender, r: TruncateChunksReq) -> Result<Empty, RemoteError> {
        data::truncate_chunks(self, r)
    }
    fn remove_chunks(&self, _: &Sender, r: RemoveChunksReq) -> Result<Empty, RemoteError> {
        data::remove_chunks(self, r)
    }
    fn statfs(&self, _: &Sender, _: StatfsReq) -> Result<StatfsReply, RemoteError> {
        mgmt::statfs(self)
    }
    fn set_attr(&self, _: &Sender, r: SetAttrReq) -> Result<StatReply, RemoteError> {
        meta::set_attr(self, r)
    }
    fn metrics(&self, _: &Sender, _: MetricsReq) -> Result<MetricsReply, RemoteError> {
        mgmt::metrics(self)
    }
    fn report_unsupported(
        &self,
        _: &Sender,
        r: ReportUnsupportedReq,
    ) -> Result<Empty, RemoteError> {
        mgmt::report_unsupported(self, r)
    }
    fn relay(&self, from: &Sender, r: RelayReq) -> Result<RelayReply, RemoteError> {
        if !from.is_local() {
            // Only for processes on this node: never a hop for another node's traffic.
            return Err(RemoteError::new(
                gkfs_proto::Errno::EPERM,
                "relays only serve the node-local socket",
            ));
        }
        mgmt::relay(self, r)
    }
    fn allocate_chunks(&self, _: &Sender, r: AllocateChunksReq) -> Result<Empty, RemoteError> {
        data::allocate_chunks(self, r)
    }
    fn chunk_dir(&self, from: &Sender, _: ChunkDirReq) -> Result<ChunkDirReply, RemoteError> {
        if !from.is_local() {
            // A path on this node means nothing to another node's process.
            return Err(RemoteError::new(
                gkfs_proto::Errno::EPERM,
                "the chunk directory is only told over the node-local socket",
            ));
        }
        data::chunk_dir(self)
    }
    fn adjust_links(&self, _: &Sender, r: AdjustLinksReq) -> Result<AdjustLinksReply, RemoteError> {
        meta::adjust_links(self, r)
    }
    fn lock(&self, from: &Sender, r: LockReq) -> Result<LockReply, RemoteError> {
        Ok(self
            .locks
            .apply(&r, std::time::Instant::now(), from.local_pid())?)
    }
    fn lock_lease(&self, _: &Sender, r: LockLeaseReq) -> Result<LockLeaseReply, RemoteError> {
        let held = self
            .locks
            .lease(&r.owners, r.release, &r.path, std::time::Instant::now());
        Ok(LockLeaseReply { held })
    }
}
