//! Objects that come and go while the client runs (an app's objects, issue
//! 14): adding one or removing one changes the registration's object list,
//! so each asks for a Registration Update (Core 1.1 §6.2.2).

use std::time::Instant;

use coap_lite::MessageType;

use super::{Client, dispatch};
use crate::coap::msg::{self, Code};
use crate::model::Path;
use crate::object::{Object, OpError};

impl Client {
    /// Adds an object whose id is not served yet; the registration gets an
    /// Update with the new object list (or the Register that is in flight
    /// is followed by one).
    pub fn add_object(&mut self, now: Instant, object: Box<dyn Object>) -> Result<(), OpError> {
        let id = object.id();
        if self.objects.iter().any(|o| o.id() == id) {
            return Err(OpError::BadRequest(format!(
                "object {id} is already served"
            )));
        }
        self.objects.push(object);
        self.bodies.clear();
        self.reads.clear();
        self.request_update_if_listed_changed(now);
        Ok(())
    }

    /// Removes object `id`: its observations end (each observer gets a 4.04
    /// notification, RFC 7641 §4.2: an error ends an observation), its
    /// held requests are answered 5.03, its Write-Attributes are forgotten,
    /// and the registration gets an Update without it.
    pub fn remove_object(&mut self, now: Instant, id: u16) -> Option<Box<dyn Object>> {
        let index = self.objects.iter().position(|o| o.id() == id)?;
        let object = self.objects.remove(index);
        for key in self.observers.remove_object(id) {
            self.last_notified.remove(&key);
            self.notify_keys.remove(&key);
            let mut p = msg::response_to(&coap_lite::Packet::new(), Code::NOT_FOUND);
            p.header.set_type(MessageType::NonConfirmable);
            p.set_token(key.1.clone());
            self.ep.send_message(now, key.0, p);
        }
        self.attrs.remove_under(Path::object(id));
        let held: Vec<super::PendingId> = self
            .held
            .iter()
            .filter(|(_, h)| h.objects.contains(&id) || targets(&h.request.packet, id))
            .map(|(pending, _)| *pending)
            .collect();
        for pending in held {
            if let Some(h) = self.held.remove(&pending) {
                let error = OpError::ServiceUnavailable("the object was withdrawn".into());
                let resp = dispatch::failure_response(&h.request.packet, error.into());
                self.send_response(now, &h.request, resp, false);
            }
        }
        self.bodies.clear();
        self.reads.clear();
        self.request_update_if_listed_changed(now);
        Some(object)
    }

    /// While registered, an Update follows when the link list differs from
    /// the one the server has (after a Register in flight, the 2.01 checks).
    fn request_update_if_listed_changed(&mut self, now: Instant) {
        if self.is_registered() && self.link_payload() != self.reg_payload {
            self.update_wanted = true;
        }
        self.pump(now);
    }
}

/// Whether a request's Uri-Path starts with object `id`.
fn targets(request: &coap_lite::Packet, id: u16) -> bool {
    msg::uri_path(request).and_then(|segments| segments.first().and_then(|s| s.parse::<u16>().ok()))
        == Some(id)
}
