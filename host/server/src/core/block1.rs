//! Block1 sender (RFC 7959 §2.5): pushes a large Write payload in blocks,
//! following the client's size negotiation. The proto crate has only the
//! receiving side, so the server's sending side lives here.

use coap_lite::{CoapOption, Packet};
use wasmdm_proto::coap::block::BlockOpt;
use wasmdm_proto::coap::msg::{self, Code};

/// 1024-byte blocks (SZX 6), the largest RFC 7959 allows.
pub const DEFAULT_SZX: u8 = 6;

/// What to do after a block's response.
#[derive(Debug, PartialEq)]
pub enum Block1Step {
    /// Send this next request.
    Send(Packet),
    /// The transfer completed with this final response code.
    Done(u8),
    /// The client refused; the code is the error.
    Failed(u8),
}

/// State of one block-wise Write.
#[derive(Debug)]
pub struct Block1Sender {
    template: Packet,
    /// Shared by every push of the same file (one copy in memory).
    payload: std::sync::Arc<Vec<u8>>,
    szx: u8,
    offset: u64,
    restarts: u32,
}

/// Number of 4.13/4.08 restarts accepted before giving up.
const MAX_RESTARTS: u32 = 3;

impl Block1Sender {
    /// `template` is the Write request without payload (path, method, CF).
    pub fn new(template: Packet, payload: std::sync::Arc<Vec<u8>>, szx: u8) -> Self {
        Block1Sender {
            template,
            payload,
            szx: szx.min(DEFAULT_SZX),
            offset: 0,
            restarts: 0,
        }
    }

    /// Bytes acknowledged so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Total payload size.
    pub fn total(&self) -> u64 {
        self.payload.len() as u64
    }

    /// The request carrying the block at the current offset.
    pub fn current(&self) -> Packet {
        let size = 1u64 << (self.szx + 4);
        let num = (self.offset / size) as u32;
        let start = self.offset as usize;
        let end = (self.offset + size).min(self.total()) as usize;
        let mut p = self.template.clone();
        p.payload = self
            .payload
            .get(start..end)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let more = (end as u64) < self.total();
        BlockOpt {
            num,
            more,
            szx: self.szx,
        }
        .write(&mut p, CoapOption::Block1);
        if num == 0 {
            // RFC 7959 §4: Size1 tells the client the whole size up front.
            msg::set_uint(&mut p, CoapOption::Size1, self.total());
        }
        p
    }

    /// Feeds the response to [`Block1Sender::current`].
    pub fn on_response(&mut self, response: &Packet) -> Block1Step {
        let code = Code::of(response);
        let echoed = BlockOpt::read(response, CoapOption::Block1).ok().flatten();
        let size = 1u64 << (self.szx + 4);
        match code {
            Code::CONTINUE => {
                // Late negotiation: the client may ask for smaller blocks (§2.5).
                let sent_end = (self.offset + size).min(self.total());
                self.offset = sent_end;
                if let Some(b) = echoed
                    && b.szx < self.szx
                {
                    self.szx = b.szx;
                }
                if self.offset >= self.total() {
                    return Block1Step::Failed(code.0);
                }
                Block1Step::Send(self.current())
            }
            Code::REQUEST_ENTITY_TOO_LARGE | Code::REQUEST_ENTITY_INCOMPLETE
                if self.restarts < MAX_RESTARTS =>
            {
                // §2.9.3: 4.13 with a smaller Block1 SZX hint; 4.08: start over.
                self.restarts += 1;
                match echoed {
                    Some(b) if b.szx < self.szx => self.szx = b.szx,
                    _ if code == Code::REQUEST_ENTITY_TOO_LARGE && self.szx > 0 => self.szx -= 1,
                    _ if code == Code::REQUEST_ENTITY_TOO_LARGE => {
                        return Block1Step::Failed(code.0);
                    }
                    _ => {}
                }
                self.offset = 0;
                Block1Step::Send(self.current())
            }
            c if c.is_success() => {
                if self.offset + size >= self.total() {
                    self.offset = self.total();
                    Block1Step::Done(c.0)
                } else {
                    // Final code before the last block: the client took it all at once.
                    self.offset = self.total();
                    Block1Step::Done(c.0)
                }
            }
            c => Block1Step::Failed(c.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coap_lite::RequestType;

    fn template() -> Packet {
        let mut p = msg::request(RequestType::Put, &["9", "0", "2"]);
        msg::set_uint(&mut p, CoapOption::ContentFormat, 42);
        p
    }
    fn reply(code: Code, block: Option<BlockOpt>) -> Packet {
        let mut p = Packet::new();
        code.set_on(&mut p);
        if let Some(b) = block {
            b.write(&mut p, CoapOption::Block1);
        }
        p
    }
    fn block_of(p: &Packet) -> BlockOpt {
        BlockOpt::read(p, CoapOption::Block1).unwrap().unwrap()
    }

    #[test]
    fn pushes_2500_bytes_in_1024_byte_blocks() {
        let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let mut s = Block1Sender::new(template(), std::sync::Arc::new(data.clone()), DEFAULT_SZX);
        let p0 = s.current();
        assert_eq!(
            block_of(&p0),
            BlockOpt {
                num: 0,
                more: true,
                szx: 6
            }
        );
        assert_eq!(
            msg::get_uint(&p0, CoapOption::Size1, 4).unwrap(),
            Some(2500)
        );
        assert_eq!(p0.payload, data[..1024]);
        let Block1Step::Send(p1) = s.on_response(&reply(Code::CONTINUE, Some(block_of(&p0))))
        else {
            panic!()
        };
        assert_eq!(
            block_of(&p1),
            BlockOpt {
                num: 1,
                more: true,
                szx: 6
            }
        );
        let Block1Step::Send(p2) = s.on_response(&reply(Code::CONTINUE, Some(block_of(&p1))))
        else {
            panic!()
        };
        assert_eq!(
            block_of(&p2),
            BlockOpt {
                num: 2,
                more: false,
                szx: 6
            }
        );
        assert_eq!(p2.payload, data[2048..]);
        assert_eq!(
            s.on_response(&reply(Code::CHANGED, Some(block_of(&p2)))),
            Block1Step::Done(0x44)
        );
        assert_eq!(s.offset(), 2500);
    }

    #[test]
    fn follows_late_negotiation_and_413() {
        let data = vec![7u8; 1500];
        let mut s = Block1Sender::new(template(), std::sync::Arc::new(data), DEFAULT_SZX);
        // Client acks block 0 (1024 bytes) but asks for 512-byte blocks: next is NUM 2 of 512.
        let Block1Step::Send(p) = s.on_response(&reply(
            Code::CONTINUE,
            Some(BlockOpt {
                num: 0,
                more: true,
                szx: 5,
            }),
        )) else {
            panic!()
        };
        assert_eq!(
            block_of(&p),
            BlockOpt {
                num: 2,
                more: false,
                szx: 5
            }
        );
        assert_eq!(p.payload.len(), 476);
        // 4.13 with a 256-byte hint restarts from zero.
        let Block1Step::Send(p) = s.on_response(&reply(
            Code::REQUEST_ENTITY_TOO_LARGE,
            Some(BlockOpt {
                num: 0,
                more: false,
                szx: 4,
            }),
        )) else {
            panic!()
        };
        assert_eq!(
            block_of(&p),
            BlockOpt {
                num: 0,
                more: true,
                szx: 4
            }
        );
        // Any other error ends the transfer.
        assert_eq!(
            s.on_response(&reply(Code::METHOD_NOT_ALLOWED, None)),
            Block1Step::Failed(0x85)
        );
    }
}
