//! Block-wise transfers (RFC 7959): the Block option, server-side Block1
//! assembly, Block2 serving of large bodies, and the client-side Block2
//! download session used to pull packages over `coap://`.

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};

use super::msg::{self, Code};

/// Largest SZX (1024-byte blocks); 7 is reserved (RFC 7959 §2.2).
pub const MAX_SZX: u8 = 6;

/// A decoded Block1/Block2 option value `NUM | M | SZX` (RFC 7959 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockOpt {
    /// Block number.
    pub num: u32,
    /// More blocks follow.
    pub more: bool,
    /// Size exponent: block size is `2^(szx + 4)`.
    pub szx: u8,
}

/// Why a Block option could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockOptError {
    /// Longer than 3 bytes (RFC 7959 §2.2).
    #[error("block option longer than 3 bytes")]
    TooLong,
    /// SZX 7 is reserved (RFC 7959 §2.2).
    #[error("reserved SZX 7")]
    ReservedSzx,
}

impl BlockOpt {
    /// Block size in bytes.
    pub const fn size(self) -> u64 {
        1u64 << (self.szx as u32 + 4)
    }
    /// Byte offset of this block.
    pub const fn offset(self) -> u64 {
        self.num as u64 * self.size()
    }
    /// Encodes to the option's uint value.
    pub const fn value(self) -> u64 {
        ((self.num as u64) << 4) | ((self.more as u64) << 3) | (self.szx as u64 & 7)
    }
    /// Decodes an option's uint value.
    pub fn from_value(v: u64) -> Result<Self, BlockOptError> {
        if v >= 1 << 24 {
            return Err(BlockOptError::TooLong);
        }
        let szx = (v & 7) as u8;
        if szx == 7 {
            return Err(BlockOptError::ReservedSzx);
        }
        Ok(BlockOpt {
            num: (v >> 4) as u32,
            more: v & 8 != 0,
            szx,
        })
    }
    /// Reads `option` (Block1 or Block2) from a packet; `Ok(None)` when absent.
    pub fn read(packet: &Packet, option: CoapOption) -> Result<Option<Self>, BlockOptError> {
        match packet.get_first_option(option) {
            None => Ok(None),
            Some(raw) => {
                let v = msg::uint_value(raw, 3).ok_or(BlockOptError::TooLong)?;
                Self::from_value(v).map(Some)
            }
        }
    }
    /// Sets `option` on a packet.
    pub fn write(self, packet: &mut Packet, option: CoapOption) {
        msg::set_uint(packet, option, self.value());
    }
}

/// Size of a block with exponent `szx`.
pub const fn szx_size(szx: u8) -> u64 {
    1u64 << (szx as u32 + 4)
}

/// Progress of one incoming Block1 transfer (per peer and resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block1Rx {
    /// The offset the next block must start at.
    pub next_offset: u64,
}

/// Limits the receiver applies to Block1 transfers.
#[derive(Debug, Clone, Copy)]
pub struct Block1Limits {
    /// Largest block exponent accepted; larger blocks get a smaller SZX back (late negotiation).
    pub max_szx: u8,
    /// Largest total body, if any: announced Size1 above it -> 4.13 + Size1.
    pub max_size: Option<u64>,
}

/// What to do with one received Block1 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block1Step {
    /// Hand the payload to the sink at `offset`; `last` ends the body. Answer
    /// 2.31 Continue with `reply` echoed when not last, else the final code with `reply`.
    Piece {
        /// Offset of this piece in the body.
        offset: u64,
        /// Last piece.
        last: bool,
        /// Block1 option to put in the response.
        reply: BlockOpt,
    },
    /// Refuse the block; the transfer state is dropped unless the code is 4.08.
    Reject {
        /// 4.00, 4.08 or 4.13.
        code: Code,
        /// Size1 to announce with 4.13 (RFC 7959 §2.9.3).
        size1: Option<u64>,
    },
}

/// Applies RFC 7959 §2.3-§2.5 to one Block1 request. `state` is the
/// transfer in progress for this peer and resource (None before block 0).
pub fn block1_step(
    state: &mut Option<Block1Rx>,
    opt: BlockOpt,
    payload_len: usize,
    size1: Option<u64>,
    limits: Block1Limits,
) -> Block1Step {
    let reject = |code, size1| Block1Step::Reject { code, size1 };
    let len = payload_len as u64;
    // §2.9.3: refuse up-front when the announced total is too large.
    if let (Some(total), Some(max)) = (size1, limits.max_size)
        && total > max
    {
        *state = None;
        return reject(Code::REQUEST_ENTITY_TOO_LARGE, Some(max));
    }
    if opt.num == 0 {
        // §2.5: NUM=0 starts (or restarts) the body.
        *state = Some(Block1Rx { next_offset: 0 });
    }
    let Some(rx) = state.as_mut() else {
        return reject(Code::REQUEST_ENTITY_INCOMPLETE, None);
    };
    let offset = opt.offset();
    if offset != rx.next_offset {
        // §2.9.2: a block without the ones before it.
        return reject(Code::REQUEST_ENTITY_INCOMPLETE, None);
    }
    // §2.2: all blocks but the last carry exactly the block size.
    if len > opt.size() || (opt.more && len != opt.size()) {
        *state = None;
        return reject(Code::BAD_REQUEST, None);
    }
    if let Some(max) = limits.max_size
        && offset + len > max
    {
        *state = None;
        return reject(Code::REQUEST_ENTITY_TOO_LARGE, Some(max));
    }
    rx.next_offset = offset + len;
    let last = !opt.more;
    if last {
        *state = None;
    }
    // §2.3: late negotiation - answer with our smaller SZX; the client
    // continues at the offset it reached, counted in the new size.
    let reply = if opt.szx > limits.max_szx {
        let szx = limits.max_szx;
        BlockOpt {
            num: (offset / szx_size(szx)) as u32,
            more: opt.more,
            szx,
        }
    } else {
        opt
    };
    Block1Step::Piece {
        offset,
        last,
        reply,
    }
}

/// One block of a large body to serve with Block2 (RFC 7959 §2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block2Slice<'a> {
    /// The block's bytes.
    pub bytes: &'a [u8],
    /// The Block2 option for the response.
    pub opt: BlockOpt,
}

/// Which block of a body of `len` bytes to send: its byte range and Block2
/// option. `requested` is the Block2 option of the request (early
/// negotiation, or a later block). `Ok(None)` when the body fits in one
/// message and no block was asked for; `Err(4.02)` for a block beyond the
/// end (§2.2). For bodies served from disk without holding them.
pub fn block2_window(
    len: u64,
    requested: Option<BlockOpt>,
    max_szx: u8,
) -> Result<Option<(u64, u64, BlockOpt)>, Code> {
    let max_szx = max_szx.min(MAX_SZX);
    let (offset, szx) = match requested {
        None if len <= szx_size(max_szx) => return Ok(None),
        None => (0, max_szx),
        Some(r) => {
            let szx = r.szx.min(max_szx);
            (r.offset(), szx)
        }
    };
    let size = szx_size(szx);
    if offset > 0 && offset >= len {
        return Err(Code::BAD_OPTION);
    }
    let end = (offset + size).min(len);
    let opt = BlockOpt {
        num: u32::try_from(offset / size).map_err(|_| Code::BAD_OPTION)?,
        more: end < len,
        szx,
    };
    Ok(Some((offset, end, opt)))
}

/// Picks the block of `body` to send (see [`block2_window`]).
pub fn block2_slice(
    body: &[u8],
    requested: Option<BlockOpt>,
    max_szx: u8,
) -> Result<Option<Block2Slice<'_>>, Code> {
    let Some((offset, end, opt)) = block2_window(body.len() as u64, requested, max_szx)? else {
        return Ok(None);
    };
    let bytes = usize::try_from(offset)
        .ok()
        .zip(usize::try_from(end).ok())
        .and_then(|(s, e)| body.get(s..e))
        .ok_or(Code::BAD_OPTION)?;
    Ok(Some(Block2Slice { bytes, opt }))
}

/// Why a block download stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// The server answered with a non-2.05 code.
    #[error("server answered {0}")]
    Status(Code),
    /// The resource changed during the transfer (ETag differs, RFC 7959 §2.4).
    #[error("resource changed during download (ETag)")]
    EtagChanged,
    /// A resumed download's first answer has no ETag although one was stored
    /// with the earlier bytes: nothing shows they are of the same
    /// representation (RFC 7959 §2.4), so they must not be joined.
    #[error("no ETag to match the one stored before the resume")]
    EtagMissing,
    /// A block at an unexpected offset or of the wrong size.
    #[error("unexpected block: {0}")]
    BadBlock(&'static str),
    /// The Block2 option of the response is malformed.
    #[error("malformed Block2 option: {0}")]
    BadOption(#[from] BlockOptError),
    /// No request is outstanding, or the download already ended.
    #[error("no block requested")]
    NotExpected,
}

/// One piece of a downloaded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Where the bytes go; 0 means (re)start from scratch.
    pub offset: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// More pieces follow.
    pub more: bool,
}

/// Client side of a Block2 download (RFC 7959 §3.2): GET block by block,
/// optionally starting at a block number to resume after a restart.
///
/// Sans-IO: [`BlockDownload::next_request`] gives the GET to send (through an
/// [`super::Endpoint`]), [`BlockDownload::handle_response`] consumes the answer.
#[derive(Debug, Clone)]
pub struct BlockDownload {
    path: Vec<String>,
    query: Vec<String>,
    szx: u8,
    next_offset: u64,
    etag: Option<Vec<u8>>,
    /// Resuming with a stored ETag: the first answer must carry it.
    resumed: bool,
    in_flight: bool,
    done: bool,
}

impl BlockDownload {
    /// A download of `path` (Uri-Path segments) from block `start_block` of
    /// size `2^(szx+4)` (szx 6 = 1024 bytes by default).
    pub fn new(path: Vec<String>, query: Vec<String>, start_block: u32, szx: u8) -> Self {
        let szx = szx.min(MAX_SZX);
        BlockDownload {
            path,
            query,
            szx,
            next_offset: u64::from(start_block) * szx_size(szx),
            etag: None,
            resumed: false,
            in_flight: false,
            done: false,
        }
    }

    /// Expects this ETag (saved before a restart): a different one fails the
    /// download, and so does a first answer without one when resuming past
    /// block 0 (the stored bytes could be of another representation).
    pub fn with_etag(mut self, etag: Option<Vec<u8>>) -> Self {
        self.resumed = etag.is_some() && self.next_offset > 0;
        self.etag = etag;
        self
    }

    /// The ETag seen so far (persist it with the offset to resume).
    pub fn etag(&self) -> Option<&[u8]> {
        self.etag.as_deref()
    }

    /// Bytes received so far (counting from offset 0).
    pub fn offset(&self) -> u64 {
        self.next_offset
    }

    /// The block number the next GET asks for.
    pub fn next_block(&self) -> u32 {
        u32::try_from(self.next_offset / szx_size(self.szx)).unwrap_or(u32::MAX)
    }

    /// True once the last block arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next GET to send (CON, Block2 NUM n), or `None` when done or a
    /// request is already outstanding.
    pub fn next_request(&mut self) -> Option<Packet> {
        if self.done || self.in_flight {
            return None;
        }
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(RequestType::Get);
        msg::add_strings(&mut p, CoapOption::UriPath, &self.path);
        msg::add_strings(&mut p, CoapOption::UriQuery, &self.query);
        BlockOpt {
            num: self.next_block(),
            more: false,
            szx: self.szx,
        }
        .write(&mut p, CoapOption::Block2);
        self.in_flight = true;
        Some(p)
    }

    /// Gives up on the outstanding GET (e.g. timeout) so it can be re-issued.
    pub fn request_lost(&mut self) {
        self.in_flight = false;
    }

    /// Consumes the response to the last GET.
    pub fn handle_response(&mut self, packet: &Packet) -> Result<Piece, DownloadError> {
        if !self.in_flight || self.done {
            return Err(DownloadError::NotExpected);
        }
        self.in_flight = false;
        let code = Code::of(packet);
        if code != Code::CONTENT {
            self.done = true;
            return Err(DownloadError::Status(code));
        }
        // RFC 7959 §2.4: the blocks of one body share its ETag.
        match (packet.get_first_option(CoapOption::ETag), &self.etag) {
            (Some(tag), Some(known)) if known != tag => {
                self.done = true;
                return Err(DownloadError::EtagChanged);
            }
            (Some(tag), None) => self.etag = Some(tag.clone()),
            (None, Some(_)) if self.resumed => {
                self.done = true;
                return Err(DownloadError::EtagMissing);
            }
            _ => {}
        }
        self.resumed = false;
        let Some(opt) = BlockOpt::read(packet, CoapOption::Block2)? else {
            // The server ignored Block2: the whole body, from the start.
            self.done = true;
            self.next_offset = packet.payload.len() as u64;
            return Ok(Piece {
                offset: 0,
                bytes: packet.payload.clone(),
                more: false,
            });
        };
        if opt.offset() != self.next_offset {
            self.done = true;
            return Err(DownloadError::BadBlock(
                "offset differs from the one requested",
            ));
        }
        let len = packet.payload.len() as u64;
        if len > opt.size() || (opt.more && len != opt.size()) {
            self.done = true;
            return Err(DownloadError::BadBlock("block size"));
        }
        // RFC 7959 §2.4: the server may pick a smaller size; follow it.
        self.szx = self.szx.min(opt.szx);
        let offset = self.next_offset;
        self.next_offset += len;
        self.done = !opt.more;
        Ok(Piece {
            offset,
            bytes: packet.payload.clone(),
            more: opt.more,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: Block1Limits = Block1Limits {
        max_szx: 6,
        max_size: Some(100_000),
    };

    #[test]
    fn option_values_match_wire() {
        // EMQX capture: D1 02 08 = Block1 NUM0 M1 SZX0; 18 = NUM1 M1 SZX0.
        assert_eq!(
            BlockOpt::from_value(0x08).unwrap(),
            BlockOpt {
                num: 0,
                more: true,
                szx: 0
            }
        );
        assert_eq!(
            BlockOpt {
                num: 1,
                more: true,
                szx: 0
            }
            .value(),
            0x18
        );
        assert_eq!(
            BlockOpt {
                num: 11,
                more: true,
                szx: 0
            }
            .value(),
            0xB8
        );
        assert_eq!(BlockOpt::from_value(0x0F), Err(BlockOptError::ReservedSzx));
        assert_eq!(BlockOpt::from_value(1 << 24), Err(BlockOptError::TooLong));
    }

    #[test]
    fn block1_sequence_restart_and_out_of_order() {
        let mut st = None;
        let b = |num, more| BlockOpt { num, more, szx: 0 };
        assert!(matches!(
            block1_step(&mut st, b(0, true), 16, None, LIM),
            Block1Step::Piece {
                offset: 0,
                last: false,
                ..
            }
        ));
        assert!(matches!(
            block1_step(&mut st, b(1, true), 16, None, LIM),
            Block1Step::Piece { offset: 16, .. }
        ));
        // skip block 2 -> 4.08, state kept
        assert_eq!(
            block1_step(&mut st, b(3, true), 16, None, LIM),
            Block1Step::Reject {
                code: Code::REQUEST_ENTITY_INCOMPLETE,
                size1: None
            }
        );
        assert!(matches!(
            block1_step(&mut st, b(2, true), 16, None, LIM),
            Block1Step::Piece { offset: 32, .. }
        ));
        // restart at NUM 0
        assert!(matches!(
            block1_step(&mut st, b(0, true), 16, None, LIM),
            Block1Step::Piece { offset: 0, .. }
        ));
        assert!(matches!(
            block1_step(&mut st, b(1, false), 3, None, LIM),
            Block1Step::Piece {
                offset: 16,
                last: true,
                ..
            }
        ));
        assert!(st.is_none());
        // a middle block with no transfer in progress -> 4.08
        assert!(matches!(
            block1_step(&mut st, b(4, true), 16, None, LIM),
            Block1Step::Reject {
                code: Code::REQUEST_ENTITY_INCOMPLETE,
                ..
            }
        ));
        // short non-final block -> 4.00
        assert!(matches!(
            block1_step(&mut st, b(0, true), 10, None, LIM),
            Block1Step::Reject {
                code: Code::BAD_REQUEST,
                ..
            }
        ));
    }

    #[test]
    fn block1_size1_and_late_negotiation() {
        let mut st = None;
        let lim = Block1Limits {
            max_szx: 5,
            max_size: Some(4096),
        };
        assert_eq!(
            block1_step(
                &mut st,
                BlockOpt {
                    num: 0,
                    more: true,
                    szx: 6
                },
                1024,
                Some(5000),
                lim
            ),
            Block1Step::Reject {
                code: Code::REQUEST_ENTITY_TOO_LARGE,
                size1: Some(4096)
            }
        );
        let step = block1_step(
            &mut st,
            BlockOpt {
                num: 0,
                more: true,
                szx: 6,
            },
            1024,
            Some(3000),
            lim,
        );
        assert_eq!(
            step,
            Block1Step::Piece {
                offset: 0,
                last: false,
                reply: BlockOpt {
                    num: 0,
                    more: true,
                    szx: 5
                }
            }
        );
        // the client continues at 1024 = block 2 of 512
        assert!(matches!(
            block1_step(
                &mut st,
                BlockOpt {
                    num: 2,
                    more: true,
                    szx: 5
                },
                512,
                None,
                lim
            ),
            Block1Step::Piece { offset: 1024, .. }
        ));
    }

    #[test]
    fn block2_slices() {
        let body: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        assert_eq!(block2_slice(&body[..100], None, 6).unwrap(), None);
        let s = block2_slice(&body, None, 6).unwrap().unwrap();
        assert_eq!(
            (s.bytes.len(), s.opt),
            (
                1024,
                BlockOpt {
                    num: 0,
                    more: true,
                    szx: 6
                }
            )
        );
        let s = block2_slice(
            &body,
            Some(BlockOpt {
                num: 2,
                more: false,
                szx: 6,
            }),
            6,
        )
        .unwrap()
        .unwrap();
        assert_eq!((s.bytes, s.opt.more), (&body[2048..], false));
        // early negotiation for 256-byte blocks
        let s = block2_slice(
            &body,
            Some(BlockOpt {
                num: 0,
                more: false,
                szx: 4,
            }),
            6,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.bytes.len(), 256);
        assert_eq!(
            block2_slice(
                &body,
                Some(BlockOpt {
                    num: 3,
                    more: false,
                    szx: 6
                }),
                6
            ),
            Err(Code::BAD_OPTION)
        );
    }

    fn content(payload: &[u8], opt: Option<BlockOpt>, etag: &[u8]) -> Packet {
        let mut p = Packet::new();
        Code::CONTENT.set_on(&mut p);
        p.payload = payload.to_vec();
        p.add_option(CoapOption::ETag, etag.to_vec());
        if let Some(o) = opt {
            o.write(&mut p, CoapOption::Block2);
        }
        p
    }

    #[test]
    fn download_resumes_at_block_and_detects_etag_change() {
        let mut d = BlockDownload::new(vec!["pkg".into()], vec![], 3, 6).with_etag(Some(vec![1]));
        let req = d.next_request().unwrap();
        assert_eq!(
            BlockOpt::read(&req, CoapOption::Block2).unwrap(),
            Some(BlockOpt {
                num: 3,
                more: false,
                szx: 6
            })
        );
        assert!(d.next_request().is_none(), "one GET at a time");
        let piece = d
            .handle_response(&content(
                &[7; 1024],
                Some(BlockOpt {
                    num: 3,
                    more: true,
                    szx: 6,
                }),
                &[1],
            ))
            .unwrap();
        assert_eq!((piece.offset, piece.more), (3072, true));
        let req = d.next_request().unwrap();
        assert_eq!(
            BlockOpt::read(&req, CoapOption::Block2)
                .unwrap()
                .unwrap()
                .num,
            4
        );
        let err = d.handle_response(&content(
            &[7; 10],
            Some(BlockOpt {
                num: 4,
                more: false,
                szx: 6,
            }),
            &[2],
        ));
        assert_eq!(err, Err(DownloadError::EtagChanged));
    }

    #[test]
    fn a_resume_with_a_stored_etag_needs_it_in_the_first_answer() {
        let block = |num, etag: Option<&[u8]>| {
            let mut p = Packet::new();
            Code::CONTENT.set_on(&mut p);
            p.payload = vec![7; 1024];
            if let Some(tag) = etag {
                p.add_option(CoapOption::ETag, tag.to_vec());
            }
            BlockOpt {
                num,
                more: true,
                szx: 6,
            }
            .write(&mut p, CoapOption::Block2);
            p
        };
        // Resumed at block 3 with a stored tag: an answer without any fails.
        let mut d = BlockDownload::new(vec!["pkg".into()], vec![], 3, 6).with_etag(Some(vec![1]));
        d.next_request().unwrap();
        assert_eq!(
            d.handle_response(&block(3, None)),
            Err(DownloadError::EtagMissing)
        );
        assert!(d.is_done());
        // Once the first answer matched, a block without the option is taken
        // (servers may send the ETag with some blocks only).
        let mut d = BlockDownload::new(vec!["pkg".into()], vec![], 3, 6).with_etag(Some(vec![1]));
        d.next_request().unwrap();
        assert!(d.handle_response(&block(3, Some(&[1]))).is_ok());
        d.next_request().unwrap();
        assert!(d.handle_response(&block(4, None)).is_ok());
        d.next_request().unwrap();
        assert_eq!(
            d.handle_response(&block(5, Some(&[2]))),
            Err(DownloadError::EtagChanged)
        );
        // From block 0 nothing was stored: no tag needed.
        let mut d = BlockDownload::new(vec!["pkg".into()], vec![], 0, 6).with_etag(Some(vec![1]));
        d.next_request().unwrap();
        assert!(d.handle_response(&block(0, None)).is_ok());
    }

    #[test]
    fn download_follows_smaller_block_size_and_ends() {
        let mut d = BlockDownload::new(vec!["p".into()], vec![], 0, 6);
        d.next_request().unwrap();
        d.handle_response(&content(
            &[1; 512],
            Some(BlockOpt {
                num: 0,
                more: true,
                szx: 5,
            }),
            b"e",
        ))
        .unwrap();
        let req = d.next_request().unwrap();
        assert_eq!(
            BlockOpt::read(&req, CoapOption::Block2).unwrap().unwrap(),
            BlockOpt {
                num: 1,
                more: false,
                szx: 5
            }
        );
        let p = d
            .handle_response(&content(
                &[2; 5],
                Some(BlockOpt {
                    num: 1,
                    more: false,
                    szx: 5,
                }),
                b"e",
            ))
            .unwrap();
        assert_eq!((p.offset, p.more, d.is_done()), (512, false, true));
        assert!(d.next_request().is_none());
        let mut d = BlockDownload::new(vec!["p".into()], vec![], 0, 6);
        d.next_request().unwrap();
        let mut nf = Packet::new();
        Code::NOT_FOUND.set_on(&mut nf);
        assert_eq!(
            d.handle_response(&nf),
            Err(DownloadError::Status(Code::NOT_FOUND))
        );
    }
}
