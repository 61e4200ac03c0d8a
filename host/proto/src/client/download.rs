//! Block2 downloads the client runs for the driver (a pull of /9/x/3 over
//! CoAP): one exchange at a time per download, pieces handed out as
//! [`Event::DownloadData`] (RFC 7959 §2.4 Block2, resumable by block).

use super::*;

impl Client {
    /// Starts a Block2 download of `path` from `peer` at block `start_block`
    /// (resume), expecting `etag` if known. Pieces arrive as [`Event::DownloadData`].
    pub fn start_download(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        path: Vec<String>,
        query: Vec<String>,
        start_block: u32,
        etag: Option<Vec<u8>>,
    ) -> DownloadId {
        let id = self.next_download;
        self.next_download += 1;
        let session =
            BlockDownload::new(path, query, start_block, self.cfg.max_szx).with_etag(etag);
        self.downloads.insert(
            id,
            Download {
                peer,
                session,
                exchange: None,
            },
        );
        self.next_download_get(now, id);
        self.pump(now);
        id
    }

    /// Abandons a download.
    pub fn cancel_download(&mut self, now: Instant, id: DownloadId) {
        if let Some(d) = self.downloads.remove(&id)
            && let Some(ex) = d.exchange
        {
            self.ep.cancel(now, ex);
        }
    }

    pub(super) fn next_download_get(&mut self, now: Instant, id: DownloadId) {
        let Some(d) = self.downloads.get_mut(&id) else {
            return;
        };
        if let Some(p) = d.session.next_request() {
            let peer = d.peer;
            let ex = self.ep.send_request(now, peer, p);
            if let Some(d) = self.downloads.get_mut(&id) {
                d.exchange = Some(ex);
            }
        }
    }

    pub(super) fn on_download_response(
        &mut self,
        now: Instant,
        id: DownloadId,
        packet: Option<Packet>,
    ) {
        let Some(d) = self.downloads.get_mut(&id) else {
            return;
        };
        d.exchange = None;
        let Some(packet) = packet else {
            self.downloads.remove(&id);
            self.events.push_back(Event::DownloadFailed {
                id,
                error: DownloadFailure::Timeout,
            });
            return;
        };
        match d.session.handle_response(&packet) {
            Ok(piece) => {
                let more = piece.more;
                let etag = d.session.etag().map(<[u8]>::to_vec);
                self.events.push_back(Event::DownloadData {
                    id,
                    offset: piece.offset,
                    bytes: piece.bytes,
                    more,
                    etag,
                });
                if more {
                    self.next_download_get(now, id);
                } else {
                    self.downloads.remove(&id);
                }
            }
            Err(e) => {
                self.downloads.remove(&id);
                self.events.push_back(Event::DownloadFailed {
                    id,
                    error: e.into(),
                });
            }
        }
    }
}
