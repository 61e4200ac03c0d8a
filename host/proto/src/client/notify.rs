//! Observe notifications (RFC 7641): which paths changed, when each
//! observation is due under its attributes (pmin/pmax/gt/lt/st, Core 1.1
//! §5.1.1), and notifications larger than a block sent as Block2 block 0.

use super::*;

impl Client {
    pub(super) fn mark_changed(&mut self, path: Path) {
        self.bodies.clear();
        let objects = &self.objects;
        let value_of = |p: Path| {
            objects
                .iter()
                .find(|o| o.id() == p.object)
                .and_then(|o| dispatch::numeric_value(o.as_ref(), p))
        };
        let defaults = self.default_attrs();
        self.observers
            .changed(path, &self.attrs, defaults, &value_of);
    }

    /// The numeric value at each of `paths` (gt/lt/st of an
    /// Observe-Composite judge each path on its own value).
    pub(super) fn numeric_values(&self, paths: &[Path]) -> Vec<Option<f64>> {
        paths
            .iter()
            .map(|p| {
                self.object(p.object)
                    .and_then(|o| dispatch::numeric_value(o, *p))
            })
            .collect()
    }

    pub(super) fn flush_notifications(&mut self, now: Instant) {
        let defaults = self.default_attrs();
        for key in self.observers.due(now, &self.attrs, defaults) {
            let Some(obs) = self.observers.get(&key) else {
                continue;
            };
            let (path, accept, block_szx) = (obs.path, obs.accept, obs.block_szx);
            let composite = obs.composite.then(|| obs.paths.clone());
            let pmax_due = self.observers.pmax_due(&key, now, &self.attrs, defaults);
            let mut fake = Packet::new();
            fake.set_token(key.1.clone());
            let t = Target {
                path,
                content_format: None,
                accept,
                observe: None,
                query: Vec::new(),
            };
            let obj = self.objects.iter().find(|o| o.id() == path.object);
            let (read, values) = match (&composite, obj) {
                // Paths of absent objects are left out (Read-Composite).
                (Some(paths), _) => (
                    self.composite_notification(&fake, paths, accept),
                    self.numeric_values(paths),
                ),
                (None, Some(obj)) => (
                    dispatch::read(obj.as_ref(), &fake, &t).map(|out| out.response),
                    vec![dispatch::numeric_value(obj.as_ref(), path)],
                ),
                (None, None) => continue,
            };
            let mut packet = match read {
                Ok(packet) => packet,
                Err(f) => {
                    // RFC 7641 §4.2: an error response ends the observation.
                    let mut p = dispatch::failure_response(&fake, f);
                    p.header.set_type(MessageType::NonConfirmable);
                    self.observers.remove(&key);
                    self.last_notified.remove(&key);
                    self.notify_keys.remove(&key);
                    self.ep.send_message(now, key.0, p);
                    continue;
                }
            };
            if !pmax_due && self.last_notified.get(&key) == Some(&packet.payload) {
                self.observers.clear_pending(&key);
                continue;
            }
            self.last_notified
                .insert(key.clone(), packet.payload.clone());
            let con = self.observers.wants_con(&key, now);
            packet.header.set_type(if con {
                MessageType::Confirmable
            } else {
                MessageType::NonConfirmable
            });
            self.slice_notification(now, &key, block_szx, &mut packet);
            let seq = self.observers.next_seq();
            msg::set_uint(&mut packet, CoapOption::Observe, seq.into());
            let ex = self.ep.send_message(now, key.0, packet);
            self.observers.sent(&key, now, &values, con, ex);
        }
    }

    /// A notification larger than a block goes out as block 0 of a Block2
    /// transfer (RFC 7959 §2.4, §3.4 with RFC 7641): at the size the
    /// observer asked for in its Observe request (§2.6), else at our own
    /// largest. Its full body is kept like a Block2 read's, so the
    /// observer's GETs of blocks 1.. (no Observe) are sliced from the same
    /// representation, with the same ETag; a change in between drops it
    /// (the following blocks then come from a new body under a new ETag).
    pub(super) fn slice_notification(
        &mut self,
        now: Instant,
        key: &ObsKey,
        block_szx: Option<u8>,
        packet: &mut Packet,
    ) {
        let szx = block_szx.map_or(self.cfg.max_szx, |s| s.min(self.cfg.max_szx));
        if packet.payload.len() as u64 <= block::szx_size(szx) {
            return;
        }
        let first = BlockOpt {
            num: 0,
            more: false,
            szx,
        };
        let Ok(Some(slice)) = block::block2_slice(&packet.payload, Some(first), self.cfg.max_szx)
        else {
            return;
        };
        let (chunk, opt) = (slice.bytes.to_vec(), slice.opt);
        if let Some(body_key) = self.notify_keys.get(key) {
            self.bodies.store(now, body_key.clone(), packet);
        }
        let total = packet.payload.len() as u64;
        packet.add_option(CoapOption::ETag, etag(&packet.payload));
        msg::set_uint(packet, CoapOption::Size2, total);
        opt.write(packet, CoapOption::Block2);
        packet.payload = chunk;
    }
}

/// A 4-byte ETag of a body (FNV-1a): changes when the body changes.
pub(super) fn etag(body: &[u8]) -> Vec<u8> {
    let mut h: u32 = 0x811C_9DC5;
    for b in body {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.to_be_bytes().to_vec()
}
