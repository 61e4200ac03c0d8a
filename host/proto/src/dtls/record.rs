//! Just enough of the DTLS record header (RFC 6347 §4.1) to decide, before
//! any state is created, what a datagram from an unknown sender may start.

/// DTLS record content types (RFC 5246 §6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// 20.
    ChangeCipherSpec,
    /// 21.
    Alert,
    /// 22.
    Handshake,
    /// 23.
    ApplicationData,
    /// Anything else (RFC 9146's tls12_cid = 25 included): never valid here.
    Other(u8),
}

impl From<u8> for ContentType {
    fn from(b: u8) -> Self {
        match b {
            20 => ContentType::ChangeCipherSpec,
            21 => ContentType::Alert,
            22 => ContentType::Handshake,
            23 => ContentType::ApplicationData,
            other => ContentType::Other(other),
        }
    }
}

/// The first record of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// Content type.
    pub content_type: ContentType,
    /// Epoch (0 before the first ChangeCipherSpec).
    pub epoch: u16,
    /// For an epoch-0 handshake record, the handshake message type
    /// (1 = ClientHello, 3 = HelloVerifyRequest).
    pub handshake_type: Option<u8>,
}

impl RecordInfo {
    /// True for a plaintext ClientHello: the only record an unknown sender
    /// may open an association with (RFC 6347 §4.2.1).
    pub fn is_client_hello(&self) -> bool {
        self.content_type == ContentType::Handshake
            && self.epoch == 0
            && self.handshake_type == Some(1)
    }
}

/// Record header length: type, version, epoch, sequence number, length.
const HEADER: usize = 13;

/// For a plaintext ClientHello, whether it carries a cookie (the answer to
/// a HelloVerifyRequest) — `Some(false)` starts a new handshake.
pub fn client_hello_has_cookie(bytes: &[u8]) -> Option<bool> {
    if !first_record(bytes)?.is_client_hello() {
        return None;
    }
    // Handshake header (12), client_version (2), random (32).
    let session_id_at = HEADER + 12 + 2 + 32;
    let session_id_len = usize::from(*bytes.get(session_id_at)?);
    let cookie_len = *bytes.get(session_id_at + 1 + session_id_len)?;
    Some(cookie_len > 0)
}

/// Reads the first record's header; `None` if `bytes` is not a DTLS 1.0/1.2
/// record whose stated length fits the datagram.
pub fn first_record(bytes: &[u8]) -> Option<RecordInfo> {
    let header = bytes.get(..HEADER)?;
    // DTLS 1.0 (0xfeff) appears in ClientHello records; 1.2 is 0xfefd.
    if header[1] != 0xfe || !matches!(header[2], 0xff | 0xfd) {
        return None;
    }
    let epoch = u16::from_be_bytes([header[3], header[4]]);
    let length = usize::from(u16::from_be_bytes([header[11], header[12]]));
    let body = bytes.get(HEADER..HEADER + length)?;
    let content_type = ContentType::from(header[0]);
    let handshake_type = (content_type == ContentType::Handshake && epoch == 0)
        .then(|| body.first().copied())
        .flatten();
    Some(RecordInfo {
        content_type,
        epoch,
        handshake_type,
    })
}

/// A datagram for an established association without its ChangeCipherSpec
/// records; `None` if nothing else is left.
///
/// After the handshake a CCS can only be part of the peer repeating its
/// final flight, whose handshake records alone make us repeat ours
/// (RFC 6347 §4.2.4). A CCS record is not authenticated, and `rtc-dtls`
/// acts on one by moving the read epoch, after which every genuine record
/// is dropped: one forged 14-byte datagram would end the session.
pub fn without_change_cipher_spec(bytes: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    let mut records = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(header) = rest.get(..HEADER) else {
            // Malformed: the DTLS stack discards it whole.
            return Some(bytes.into());
        };
        let len = HEADER + usize::from(u16::from_be_bytes([header[11], header[12]]));
        let Some(record) = rest.get(..len) else {
            return Some(bytes.into());
        };
        records.push(record);
        rest = &rest[len..];
    }
    let is_ccs = |r: &&[u8]| ContentType::from(r[0]) == ContentType::ChangeCipherSpec;
    if !records.iter().any(is_ccs) {
        return Some(bytes.into());
    }
    let kept: Vec<u8> = records
        .into_iter()
        .filter(|r| !is_ccs(r))
        .flatten()
        .copied()
        .collect();
    (!kept.is_empty()).then(|| kept.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_client_hello_header() {
        // Record: handshake, DTLS 1.0, epoch 0, seq 0, length 4; body starts with type 1.
        let hello = [22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0];
        let info = first_record(&hello).unwrap();
        assert!(info.is_client_hello());
        assert_eq!(info.epoch, 0);
    }

    #[test]
    fn refuses_what_is_not_a_dtls_record() {
        // A CoAP CON GET, a short datagram, a length past the end, TLS 1.2.
        assert_eq!(first_record(&[0x40, 1, 0, 1, 0xb1, b'a']), None);
        assert_eq!(first_record(&[22, 0xfe, 0xfd]), None);
        let mut long = [23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 9, 0].to_vec();
        assert_eq!(first_record(&long), None);
        long.extend([0; 8]);
        let app = first_record(&long).unwrap();
        assert_eq!(
            (app.content_type, app.epoch, app.is_client_hello()),
            (ContentType::ApplicationData, 1, false)
        );
        assert_eq!(
            first_record(&[22, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]),
            None
        );
    }

    #[test]
    fn change_cipher_spec_records_are_cut_out() {
        let ccs = [20, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0x10, 0, 0, 1, 1];
        let app = [23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 2, 0, 2, 9, 9];
        assert_eq!(without_change_cipher_spec(&ccs), None);
        assert_eq!(without_change_cipher_spec(&app).as_deref(), Some(&app[..]));
        let both = [&ccs[..], &app[..], &ccs[..]].concat();
        assert_eq!(without_change_cipher_spec(&both).as_deref(), Some(&app[..]));
        // Malformed datagrams pass unchanged (the stack drops them).
        assert_eq!(
            without_change_cipher_spec(&ccs[..5]).as_deref(),
            Some(&ccs[..5])
        );
    }
}
