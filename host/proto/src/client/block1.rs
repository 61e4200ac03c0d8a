//! Block-wise request bodies (RFC 7959 §2.3-§2.5): a Write or Create body,
//! a package pushed to /9/x/2 (streamed, never held whole), and the bodies
//! of the composite operations, FETCH and iPATCH (RFC 8132 §2.1: Block1
//! applies to their request payload like to a PUT's or POST's). Assembled
//! bodies share one cap (`Config::assembly_cap`, 4.13 with Size1 beyond it)
//! and the transfer limit [`MAX_BLOCK1_TRANSFERS`]; a block that does not
//! follow gets 4.08.

use std::net::SocketAddr;
use std::time::Instant;

use coap_lite::{CoapOption, Packet};

use super::dispatch::{self, Failure, Outcome, Target};
use super::{Client, MAX_BLOCK1_TRANSFERS, composite};
use crate::coap::block::{self, Block1Limits, Block1Step, BlockOpt};
use crate::coap::endpoint::InboundRequest;
use crate::coap::msg::{self, Code};
use crate::model::{ContentFormat, DataType, Path};

/// A transfer's identity: the peer, the method and the Uri-Path (a FETCH
/// and an iPATCH of `/` from one server are two bodies).
pub(super) type Block1Key = (SocketAddr, Code, Vec<String>);

/// The methods whose body may come block-wise.
pub(super) fn takes_block1(code: Code) -> bool {
    matches!(
        code,
        Code::PUT | Code::POST | composite::FETCH | composite::IPATCH
    )
}

impl Client {
    /// Runs a complete request (`body` carries the assembled payload of a
    /// Block1 transfer): a composite operation on `/`, or a DM operation.
    pub(super) fn operate_any(
        &mut self,
        now: Instant,
        req: &InboundRequest,
        body: &Packet,
    ) -> Result<Outcome, Failure> {
        match Code::of(body) {
            composite::FETCH => self.fetch(now, req, body),
            composite::IPATCH => self.write_composite(body),
            _ => self.operate(now, req, body),
        }
    }

    /// True when this write streams into `Object::write_block`: an opaque
    /// single resource written as application/octet-stream.
    fn streams(&self, t: &Target) -> Option<(usize, u16, u16)> {
        let (i, r) = (t.path.instance?, t.path.resource?);
        if t.path.resource_instance.is_some()
            || t.content_format != Some(ContentFormat::Opaque.code())
        {
            return None;
        }
        let idx = self.objects.iter().position(|o| o.id() == t.path.object)?;
        let obj = self.objects.get(idx)?;
        let d = dispatch::resource_def(obj.as_ref(), r)?;
        (d.data_type == DataType::Opaque
            && !d.multiple
            && d.operations.writable()
            && obj.instances().contains(&i))
        .then_some((idx, i, r))
    }

    /// Block1 (RFC 7959 §2.3-2.5): stream opaque pushes, assemble the rest.
    pub(super) fn block1_request(
        &mut self,
        now: Instant,
        req: &InboundRequest,
        b1: BlockOpt,
    ) -> Result<Option<Outcome>, Failure> {
        let code = Code::of(&req.packet);
        // A composite body is checked whole once assembled; a DM request's
        // path first (/0 is 4.01 before any block is kept).
        let stream = if code == Code::PUT || code == Code::POST {
            let t = dispatch::parse_target(&req.packet)?;
            if t.path.object == 0 {
                return Err(Code::UNAUTHORIZED.into());
            }
            if code == Code::PUT {
                self.streams(&t).map(|s| (s, t.path))
            } else {
                None
            }
        } else {
            None
        };
        let size1 = msg::get_uint(&req.packet, CoapOption::Size1, 4)
            .map_err(|_| Failure::from(Code::BAD_OPTION))?;
        let limits = Block1Limits {
            max_szx: self.cfg.max_szx,
            max_size: if stream.is_some() {
                self.cfg.push_limit
            } else {
                Some(self.cfg.assembly_cap)
            },
        };
        let key = (
            req.peer,
            code,
            msg::uri_path(&req.packet).unwrap_or_default(),
        );
        // Transfers idle for EXCHANGE_LIFETIME are over (their next block
        // gets 4.08); past the cap a new one is refused before any state.
        let lifetime = self.cfg.coap.exchange_lifetime;
        self.block1.retain(|_, t| {
            t.last
                .is_none_or(|at| now.saturating_duration_since(at) < lifetime)
        });
        if !self.block1.contains_key(&key) && self.block1.len() >= MAX_BLOCK1_TRANSFERS {
            return Err(Code::SERVICE_UNAVAILABLE.into());
        }
        let transfer = self.block1.entry(key.clone()).or_default();
        transfer.last = Some(now);
        let step = block::block1_step(
            &mut transfer.rx,
            b1,
            req.packet.payload.len(),
            size1,
            limits,
        );
        let (offset, last, reply) = match step {
            Block1Step::Reject { code, size1 } => {
                if transfer.rx.is_none() {
                    self.block1.remove(&key);
                }
                return Err(Failure { code, size1 });
            }
            Block1Step::Piece {
                offset,
                last,
                reply,
            } => (offset, last, reply),
        };
        let with_block1 = |mut out: Outcome| {
            reply.write(&mut out.response, CoapOption::Block1);
            out
        };
        if let Some(((idx, i, r), path)) = stream {
            if last {
                self.block1.remove(&key);
            }
            let obj = self.objects.get_mut(idx).ok_or(Code::NOT_FOUND)?;
            let result = obj.write_block(i, r, offset, &req.packet.payload, last);
            let effects = match result {
                Ok(e) => e,
                Err(e) => {
                    self.block1.remove(&key);
                    return Err(e.into());
                }
            };
            let code = if last { Code::CHANGED } else { Code::CONTINUE };
            let changed = if last {
                vec![Path::instance(path.object, i)]
            } else {
                Vec::new()
            };
            let out = Outcome {
                response: msg::response_to(&req.packet, code),
                effects,
                changed,
                instances_changed: false,
            };
            return Ok(Some(with_block1(out)));
        }
        let transfer = self.block1.entry(key.clone()).or_default();
        if offset == 0 {
            transfer.buffer.clear();
        }
        transfer.buffer.extend_from_slice(&req.packet.payload);
        if !last {
            let mut resp = msg::response_to(&req.packet, Code::CONTINUE);
            reply.write(&mut resp, CoapOption::Block1);
            self.send_response(now, req, resp, false);
            return Ok(None);
        }
        let mut body = req.packet.clone();
        body.payload = self
            .block1
            .remove(&key)
            .map(|t| t.buffer)
            .unwrap_or_default();
        body.clear_option(CoapOption::Block1);
        body.clear_option(CoapOption::Size1);
        self.operate_any(now, req, &body)
            .map(|out| Some(with_block1(out)))
    }
}
