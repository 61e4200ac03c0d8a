//! CoAP message helpers on top of `coap_lite::Packet`: codes, uint options,
//! datagram classification (RFC 7252 §3, §4) and response construction.

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};

/// A CoAP code as its raw byte (`class << 5 | detail`, RFC 7252 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub u8);

impl Code {
    pub const EMPTY: Code = Code(0x00);
    pub const GET: Code = Code(0x01);
    pub const POST: Code = Code(0x02);
    pub const PUT: Code = Code(0x03);
    pub const DELETE: Code = Code(0x04);
    pub const CREATED: Code = Code(0x41);
    pub const DELETED: Code = Code(0x42);
    pub const CHANGED: Code = Code(0x44);
    pub const CONTENT: Code = Code(0x45);
    pub const CONTINUE: Code = Code(0x5F);
    pub const BAD_REQUEST: Code = Code(0x80);
    pub const UNAUTHORIZED: Code = Code(0x81);
    pub const BAD_OPTION: Code = Code(0x82);
    pub const FORBIDDEN: Code = Code(0x83);
    pub const NOT_FOUND: Code = Code(0x84);
    pub const METHOD_NOT_ALLOWED: Code = Code(0x85);
    pub const NOT_ACCEPTABLE: Code = Code(0x86);
    pub const REQUEST_ENTITY_INCOMPLETE: Code = Code(0x88);
    pub const PRECONDITION_FAILED: Code = Code(0x8C);
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code(0x8D);
    pub const UNSUPPORTED_CONTENT_FORMAT: Code = Code(0x8F);
    /// 4.29 Too Many Requests (RFC 8516).
    pub const TOO_MANY_REQUESTS: Code = Code(0x9D);
    pub const INTERNAL_SERVER_ERROR: Code = Code(0xA0);
    pub const SERVICE_UNAVAILABLE: Code = Code(0xA3);

    /// Code class (0 request, 2 success, 4 client error, 5 server error).
    pub const fn class(self) -> u8 {
        self.0 >> 5
    }
    /// True for 2.xx codes.
    pub const fn is_success(self) -> bool {
        self.class() == 2
    }
    /// Reads the code of a decoded packet.
    pub fn of(packet: &Packet) -> Code {
        Code(u8::from(packet.header.code))
    }
    /// Sets this code on a packet.
    pub fn set_on(self, packet: &mut Packet) {
        packet.header.code = MessageClass::from(self.0);
    }
    /// The name of a response code (RFC 7252 §12.1.2, RFC 7959 §2.9,
    /// RFC 8132 §2.2, RFC 8516), so a log line or an error says why, not just a number;
    /// "Unknown" for codes none of them names.
    pub const fn name(self) -> &'static str {
        match (self.class(), self.0 & 0x1F) {
            (2, 1) => "Created",
            (2, 2) => "Deleted",
            (2, 3) => "Valid",
            (2, 4) => "Changed",
            (2, 5) => "Content",
            (2, 31) => "Continue",
            (4, 0) => "Bad Request",
            (4, 1) => "Unauthorized",
            (4, 2) => "Bad Option",
            (4, 3) => "Forbidden",
            (4, 4) => "Not Found",
            (4, 5) => "Method Not Allowed",
            (4, 6) => "Not Acceptable",
            (4, 8) => "Request Entity Incomplete",
            (4, 9) => "Conflict",
            (4, 12) => "Precondition Failed",
            (4, 13) => "Request Entity Too Large",
            (4, 15) => "Unsupported Content-Format",
            (4, 29) => "Too Many Requests",
            (5, 0) => "Internal Server Error",
            (5, 1) => "Not Implemented",
            (5, 2) => "Bad Gateway",
            (5, 3) => "Service Unavailable",
            (5, 4) => "Gateway Timeout",
            (5, 5) => "Proxying Not Supported",
            _ => "Unknown",
        }
    }
    /// Parses the `c.dd` form ("4.03").
    pub fn parse(text: &str) -> Option<Code> {
        let (class, detail) = text.split_once('.')?;
        let (class, detail): (u8, u8) = (class.parse().ok()?, detail.parse().ok()?);
        (class <= 7 && detail <= 31 && detail_digits(text)).then_some(Code(class << 5 | detail))
    }
}

/// The detail of `c.dd` has two digits.
fn detail_digits(text: &str) -> bool {
    text.split_once('.').is_some_and(|(_, d)| d.len() == 2)
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.0 & 0x1F)
    }
}

/// Encodes an unsigned option value in the fewest bytes, 0 as empty (RFC 7252 §3.2).
pub fn uint_bytes(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes.get(skip..).map(<[u8]>::to_vec).unwrap_or_default()
}

/// Decodes an unsigned option value of at most `max_len` bytes.
pub fn uint_value(bytes: &[u8], max_len: usize) -> Option<u64> {
    if bytes.len() > max_len || bytes.len() > 8 {
        return None;
    }
    Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Sets (replacing) a uint option.
pub fn set_uint(packet: &mut Packet, option: CoapOption, value: u64) {
    let mut list = std::collections::LinkedList::new();
    list.push_back(uint_bytes(value));
    packet.set_option(option, list);
}

/// Error from [`get_uint`]: the option is longer than its definition allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("option {0} has an invalid uint value")]
pub struct BadOption(pub u16);

/// Reads the first value of a uint option; `Ok(None)` when absent.
pub fn get_uint(
    packet: &Packet,
    option: CoapOption,
    max_len: usize,
) -> Result<Option<u64>, BadOption> {
    match packet.get_first_option(option) {
        None => Ok(None),
        Some(v) => uint_value(v, max_len)
            .map(Some)
            .ok_or(BadOption(u16::from(option))),
    }
}

/// Uri-Path segments as strings (invalid UTF-8 -> `None`).
pub fn uri_path(packet: &Packet) -> Option<Vec<String>> {
    string_options(packet, CoapOption::UriPath)
}

/// Uri-Query entries as strings (invalid UTF-8 -> `None`).
pub fn uri_query(packet: &Packet) -> Option<Vec<String>> {
    string_options(packet, CoapOption::UriQuery)
}

fn string_options(packet: &Packet, option: CoapOption) -> Option<Vec<String>> {
    match packet.get_option(option) {
        None => Some(Vec::new()),
        Some(list) => list
            .iter()
            .map(|v| String::from_utf8(v.clone()).ok())
            .collect(),
    }
}

/// All values of a string option (Location-Path); invalid UTF-8 values are skipped.
pub fn string_list(packet: &Packet, option: CoapOption) -> Vec<String> {
    packet
        .get_option(option)
        .map(|l| {
            l.iter()
                .filter_map(|v| String::from_utf8(v.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Appends one option value per segment (Uri-Path, Location-Path, Uri-Query).
pub fn add_strings<S: AsRef<str>>(packet: &mut Packet, option: CoapOption, values: &[S]) {
    for v in values {
        packet.add_option(option, v.as_ref().as_bytes().to_vec());
    }
}

/// The message type as a number (CON 0, NON 1, ACK 2, RST 3).
pub fn type_of(packet: &Packet) -> MessageType {
    packet.header.get_type()
}

/// How an incoming datagram must be handled by the message layer.
#[derive(Debug)]
pub enum Classified {
    /// A well-formed message.
    Message(Packet),
    /// Message format error in a CON: reject with RST of this MID (RFC 7252 §4.2).
    RejectCon(u16),
    /// Unusable and not worth a reply (bad version, malformed NON/ACK/RST): silently ignore (§4.3).
    Ignore,
}

/// Parses a datagram and applies RFC 7252 §3/§4 format rules coap-lite does not check.
pub fn classify(bytes: &[u8]) -> Classified {
    let (first, mid) = match bytes {
        [b0, _, m0, m1, ..] => (*b0, u16::from_be_bytes([*m0, *m1])),
        _ => return Classified::Ignore,
    };
    // RFC 7252 §3: unknown version numbers are silently ignored.
    if first >> 6 != 1 {
        return Classified::Ignore;
    }
    let is_con = (first >> 4) & 0x03 == 0;
    let reject = || {
        if is_con {
            Classified::RejectCon(mid)
        } else {
            Classified::Ignore
        }
    };
    let packet = match Packet::from_bytes(bytes) {
        Ok(p) => p,
        Err(_) => return reject(),
    };
    let code = Code::of(&packet);
    // §4.1: an Empty message is exactly 4 bytes.
    if code == Code::EMPTY && bytes.len() != 4 {
        return reject();
    }
    // §3: a payload marker followed by a zero-length payload is a format error.
    if packet.payload.is_empty()
        && bytes.len() > 4
        && bytes.last() == Some(&0xFF)
        && marker_is_last(bytes)
    {
        return reject();
    }
    match code.class() {
        0 | 2 | 4 | 5 => {}
        _ => return reject(), // reserved classes 1, 6, 7 (§12.1)
    }
    // A request in an ACK or RST is a format error (§4.2, §4.3).
    if code.class() == 0 && code != Code::EMPTY {
        let t = type_of(&packet);
        if matches!(t, MessageType::Acknowledgement | MessageType::Reset) {
            return Classified::Ignore;
        }
    }
    // §4.2/§4.3: an RST carrying content is a format error; an ACK can't be a request.
    if type_of(&packet) == MessageType::Reset && code != Code::EMPTY {
        return Classified::Ignore;
    }
    Classified::Message(packet)
}

/// True when the final 0xFF byte of `bytes` is a payload marker rather than
/// the last byte of an option value: re-parse options to find out.
fn marker_is_last(bytes: &[u8]) -> bool {
    let tkl = bytes.first().map(|b| usize::from(b & 0x0F)).unwrap_or(0);
    let mut idx = 4 + tkl;
    while let Some(&b) = bytes.get(idx) {
        if b == 0xFF {
            return idx + 1 == bytes.len();
        }
        idx += 1;
        let mut ext = |nib: u8| -> Option<usize> {
            match nib {
                13 => {
                    let v = usize::from(*bytes.get(idx)?) + 13;
                    idx += 1;
                    Some(v)
                }
                14 => {
                    let hi = usize::from(*bytes.get(idx)?);
                    let lo = usize::from(*bytes.get(idx + 1)?);
                    idx += 2;
                    Some(((hi << 8) | lo) + 269)
                }
                n => Some(usize::from(n)),
            }
        };
        if ext(b >> 4).is_none() {
            return false;
        }
        let Some(len) = ext(b & 0x0F) else {
            return false;
        };
        idx += len;
    }
    false
}

/// Builds an empty message (ACK or RST) for `mid` (RFC 7252 §4.2).
pub fn empty(kind: MessageType, mid: u16) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(kind);
    p.header.code = MessageClass::Empty;
    p.header.message_id = mid;
    p
}

/// Builds a response to `request` with `code`, copying the token; the message
/// layer sets type and MID when it sends it.
pub fn response_to(request: &Packet, code: Code) -> Packet {
    let mut p = Packet::new();
    p.set_token(request.get_token().to_vec());
    code.set_on(&mut p);
    p
}

/// Builds a request with the given method and Uri-Path segments.
pub fn request(method: RequestType, path: &[&str]) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(method);
    p.header.set_type(MessageType::Confirmable);
    add_strings(&mut p, CoapOption::UriPath, path);
    p
}

/// Encodes a packet without coap-lite's 1280-byte default cap (block-wise keeps
/// messages small; the cap is the caller's business).
pub fn encode(packet: &Packet) -> Option<Vec<u8>> {
    packet.to_bytes_unlimited().ok()
}

/// Shorthand used in tests and by the response mapping.
pub fn response_type(code: Code) -> ResponseType {
    match MessageClass::from(code.0) {
        MessageClass::Response(r) => r,
        _ => ResponseType::UnKnown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint_encoding_is_minimal() {
        assert_eq!(uint_bytes(0), Vec::<u8>::new());
        assert_eq!(uint_bytes(40), vec![40]);
        assert_eq!(uint_bytes(11542), vec![0x2D, 0x16]);
        assert_eq!(uint_value(&[0x2D, 0x16], 2), Some(11542));
        assert_eq!(uint_value(&[1, 2, 3], 2), None);
    }

    #[test]
    fn classify_rules() {
        // ping: empty CON is a message
        assert!(matches!(
            classify(&[0x40, 0, 0x12, 0x34]),
            Classified::Message(_)
        ));
        // empty with a token: format error, CON -> RST
        assert!(matches!(
            classify(&[0x41, 0, 0x12, 0x34, 7]),
            Classified::RejectCon(0x1234)
        ));
        // version 2: ignored
        assert!(matches!(classify(&[0x80, 1, 0, 1]), Classified::Ignore));
        // too short
        assert!(matches!(classify(&[0x40, 1]), Classified::Ignore));
        // reserved class 1 in a CON -> RST, in a NON -> ignore
        assert!(matches!(
            classify(&[0x40, 0x21, 0, 9]),
            Classified::RejectCon(9)
        ));
        assert!(matches!(classify(&[0x50, 0x21, 0, 9]), Classified::Ignore));
        // truncated option in a CON -> RST
        assert!(matches!(
            classify(&[0x40, 0x01, 0, 5, 0xB3, b'a']),
            Classified::RejectCon(5)
        ));
        // payload marker with no payload -> RST
        assert!(matches!(
            classify(&[0x40, 0x01, 0, 5, 0xFF]),
            Classified::RejectCon(5)
        ));
        // option value ending in 0xFF is fine
        assert!(matches!(
            classify(&[0x40, 0x01, 0, 5, 0x41, 0xFF]),
            Classified::Message(_)
        ));
    }

    #[test]
    fn codes_have_their_names_and_parse_back() {
        assert_eq!(Code::FORBIDDEN.name(), "Forbidden");
        assert_eq!(Code(0x84).name(), "Not Found");
        assert_eq!(Code(0x9D).name(), "Too Many Requests");
        assert_eq!(Code(0x5F).name(), "Continue");
        assert_eq!(Code(0x87).name(), "Unknown");
        assert_eq!(Code::parse("4.03"), Some(Code::FORBIDDEN));
        assert_eq!(Code::parse("2.31"), Some(Code(0x5F)));
        for bad in ["4.3", "403", "8.00", "4.32", "x.00", ""] {
            assert_eq!(Code::parse(bad), None, "{bad}");
        }
    }
}
