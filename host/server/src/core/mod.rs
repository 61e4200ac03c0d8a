//! Sans-IO server core: registration, DM request building and response
//! parsing, Block1 sending and observation bookkeeping. No sockets, no
//! clock: callers pass time in as Unix milliseconds.

pub mod access;
pub mod block1;
pub mod composite;
pub mod dm;
pub mod link;
pub mod observe;
pub mod registry;
pub mod send;

/// Byte helpers the core's tests share: reference vectors are written as
/// hex, and a built request gets the message id and token they use.
#[cfg(test)]
pub(crate) mod test_bytes {
    use coap_lite::Packet;
    use wasmdm_proto::coap::msg;

    /// "44 02 00 01" -> bytes.
    pub fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// The datagram of `p` with this message id and token.
    pub fn wire(mut p: Packet, mid: u16, token: &[u8]) -> Vec<u8> {
        p.header.message_id = mid;
        p.set_token(token.to_vec());
        msg::encode(&p).unwrap()
    }
}
