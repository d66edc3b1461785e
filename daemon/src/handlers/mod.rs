//! Request handlers, by domain: metadata, data, management. The [`Handler`] impl
//! below only routes; each handler is a plain function of the state and the request.

mod data;
mod meta;
mod mgmt;

use gkfs_fabric::Peer;
use gkfs_proto::msg::*;

use crate::state::State;

impl Handler for State {
    type Ctx = Peer;
    fn ping(&self, _: &Peer, _: PingReq) -> Result<PingReply, RemoteError> {
        mgmt::ping(self)
    }
    fn stats(&self, _: &Peer, _: StatsReq) -> Result<StatsReply, RemoteError> {
        mgmt::stats(self)
    }
    fn create(&self, _: &Peer, r: CreateReq) -> Result<CreateReply, RemoteError> {
        meta::create(self, r)
    }
    fn stat(&self, _: &Peer, r: StatReq) -> Result<StatReply, RemoteError> {
        meta::stat(self, r)
    }
    fn remove(&self, _: &Peer, r: RemoveReq) -> Result<RemoveReply, RemoteError> {
        meta::remove(self, r)
    }
    fn update_size(&self, _: &Peer, r: UpdateSizeReq) -> Result<UpdateSizeReply, RemoteError> {
        meta::update_size(self, r)
    }
    fn get_size(&self, _: &Peer, r: GetSizeReq) -> Result<GetSizeReply, RemoteError> {
        meta::get_size(self, r)
    }
    fn truncate(&self, _: &Peer, r: TruncateReq) -> Result<TruncateReply, RemoteError> {
        meta::truncate(self, r)
    }
    fn read_dir(&self, _: &Peer, r: ReadDirReq) -> Result<ReadDirReply, RemoteError> {
        meta::read_dir(self, r)
    }
    fn put_record(&self, _: &Peer, r: PutRecordReq) -> Result<PutRecordReply, RemoteError> {
        meta::put_record(self, r)
    }
    fn scan_prefix(&self, _: &Peer, r: ScanPrefixReq) -> Result<ScanPrefixReply, RemoteError> {
        meta::scan_prefix(self, r)
    }
    fn write_chunks(
        &self,
        from: &Peer,
        r: WriteChunksReq,
    ) -> Result<WriteChunksReply, RemoteError> {
        data::write_chunks(self, *from, r)
    }
    fn read_chunks(&self, from: &Peer, r: ReadChunksReq) -> Result<ReadChunksReply, RemoteError> {
        data::read_chunks(self, *from, r)
    }
    fn truncate_chunks(&self, _: &Peer, r: TruncateChunksReq) -> Result<Empty, RemoteError> {
        data::truncate_chunks(self, r)
    }
    fn remove_chunks(&self, _: &Peer, r: RemoveChunksReq) -> Result<Empty, RemoteError> {
        data::remove_chunks(self, r)
    }
    fn statfs(&self, _: &Peer, _: StatfsReq) -> Result<StatfsReply, RemoteError> {
        mgmt::statfs(self)
    }
    fn set_attr(&self, _: &Peer, r: SetAttrReq) -> Result<StatReply, RemoteError> {
        meta::set_attr(self, r)
    }
}
