//! GNU long-name / long-link and PAX extended headers: applied like tar tools do, and capped in
//! size and number before their data is read (the `tar` crate would buffer them whole).

use tar::EntryType;

use super::util::*;
use crate::{ErrorKind, Limits, MAX_EXTENSION_HEADER_BYTES, PackageError, read_manifest};

/// One PAX record, `"<len> <key>=<value>\n"`, where `len` counts the whole record.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

fn extension(t: &mut RawTar<Vec<u8>>, kind: EntryType, data: &[u8]) {
    t.entry("././@LongLink", kind, "", data.len() as u64, data);
}

/// The good package, with `app.wasm` named only by an extension header before it.
fn renamed_by(kind: EntryType, data: &[u8]) -> Vec<u8> {
    let mut t = RawTar::new();
    t.file("manifest.toml", manifest().as_bytes());
    extension(&mut t, kind, data);
    t.file("placeholder", APP).file("assets/index.html", PAGE);
    t.finish()
}

fn both_refuse(bytes: &[u8], limits: &Limits) -> (PackageError, PackageError) {
    let unpacked = Scratch::new().unpack(bytes, limits, &[]).unwrap_err();
    let inspected = read_manifest(bytes, limits).unwrap_err();
    (unpacked, inspected)
}

#[test]
fn gnu_long_name_and_pax_path_name_the_next_member() {
    for (kind, data) in [
        (EntryType::GNULongName, b"app.wasm\0".to_vec()),
        (EntryType::GNULongName, b"app.wasm".to_vec()),
        (EntryType::XHeader, pax_record("path", "app.wasm")),
    ] {
        let bytes = renamed_by(kind, &data);
        let s = Scratch::new();
        s.unpack(&bytes, &Limits::default(), &[]).unwrap();
        assert_eq!(s.staged("app.wasm").unwrap(), APP);
        assert!(s.staged("placeholder").is_none());
        let i = read_manifest(&bytes[..], &Limits::default()).unwrap();
        assert!(i.is_clean(), "{i:?}");
    }
}

#[test]
fn a_header_at_the_cap_is_read_one_over_is_refused_unread() {
    // PAX records other than path and size are ignored; a long comment pads the header.
    let mut at_cap = pax_record("path", "app.wasm");
    let want = MAX_EXTENSION_HEADER_BYTES as usize - at_cap.len();
    let comment = (want - 20..want)
        .map(|n| pax_record("comment", &"c".repeat(n)))
        .find(|r| r.len() == want)
        .unwrap();
    at_cap.extend(comment);
    assert_eq!(at_cap.len() as u64, MAX_EXTENSION_HEADER_BYTES);
    let s = Scratch::new();
    s.unpack(
        &renamed_by(EntryType::XHeader, &at_cap),
        &Limits::default(),
        &[],
    )
    .unwrap();

    for (kind, what) in [
        (EntryType::GNULongName, "GNU long name"),
        (EntryType::GNULongLink, "GNU long link"),
        (EntryType::XHeader, "PAX extended header"),
    ] {
        let over = vec![b'a'; MAX_EXTENSION_HEADER_BYTES as usize + 1];
        let (a, b) = both_refuse(&renamed_by(kind, &over), &Limits::default());
        for e in [a, b] {
            assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
            assert!(
                matches!(e, PackageError::HeaderTooLarge { what: w, size, limit }
                    if w == what && size == MAX_EXTENSION_HEADER_BYTES + 1
                        && limit == MAX_EXTENSION_HEADER_BYTES),
                "{e:?}"
            );
        }
    }
}

#[test]
fn extension_headers_are_counted_per_archive() {
    // Three members under a four-entry limit, each with a long name and a PAX header: six
    // extension headers, over the limit of four (the fifth is refused).
    let l = Limits {
        max_files: 4,
        ..Limits::default()
    };
    let mut t = RawTar::new();
    let manifest = manifest();
    for (name, data) in [
        ("manifest.toml", manifest.as_bytes()),
        ("app.wasm", APP),
        ("assets/index.html", PAGE),
    ] {
        extension(&mut t, EntryType::GNULongName, name.as_bytes());
        extension(&mut t, EntryType::XHeader, &pax_record("comment", "x"));
        t.file("placeholder", data);
    }
    let (a, b) = both_refuse(&t.finish(), &l);
    for e in [a, b] {
        assert!(
            matches!(e, PackageError::TooManyHeaders { limit: 4 }),
            "{e:?}"
        );
    }
}

#[test]
fn pax_size_must_agree_with_the_header() {
    let mut pax = pax_record("path", "app.wasm");
    pax.extend(pax_record("size", "3"));
    let (a, b) = both_refuse(&renamed_by(EntryType::XHeader, &pax), &Limits::default());
    assert!(matches!(a, PackageError::HostileEntry { .. }), "{a:?}");
    assert!(matches!(b, PackageError::HostileEntry { .. }), "{b:?}");

    let mut agreeing = pax_record("path", "app.wasm");
    agreeing.extend(pax_record("size", &APP.len().to_string()));
    let s = Scratch::new();
    s.unpack(
        &renamed_by(EntryType::XHeader, &agreeing),
        &Limits::default(),
        &[],
    )
    .unwrap();
}

#[test]
fn malformed_or_dangling_or_doubled_extensions_are_integrity_errors() {
    let malformed = renamed_by(EntryType::XHeader, b"99 path=app.wasm\n");
    let (a, _) = both_refuse(&malformed, &Limits::default());
    assert!(matches!(a, PackageError::HostileEntry { .. }), "{a:?}");

    let mut doubled = RawTar::new();
    doubled.file("manifest.toml", manifest().as_bytes());
    extension(&mut doubled, EntryType::GNULongName, b"app.wasm");
    extension(&mut doubled, EntryType::GNULongName, b"app.wasm");
    doubled.file("placeholder", APP);
    let (a, b) = both_refuse(&doubled.finish(), &Limits::default());
    assert!(matches!(a, PackageError::Corrupt { .. }), "{a:?}");
    assert!(matches!(b, PackageError::Corrupt { .. }), "{b:?}");

    let mut dangling = good_tar();
    extension(&mut dangling, EntryType::GNULongName, b"more");
    let (a, b) = both_refuse(&dangling.finish(), &Limits::default());
    assert_eq!(a.kind(), ErrorKind::Integrity, "{a}");
    assert_eq!(b.kind(), ErrorKind::Integrity, "{b}");
}

#[test]
fn old_style_headers_with_extension_types_are_plain_refused_members() {
    // Without a ustar/GNU magic, tar tools do not treat 'L' as a long name: it is an ordinary
    // member of an unsupported type, refused from its header.
    let mut h = tar::Header::new_old();
    h.set_path("x").unwrap();
    h.set_entry_type(EntryType::GNULongName);
    h.set_size(1 << 30);
    h.set_cksum();
    let mut bytes = good_tar().finish();
    bytes.truncate(bytes.len() - 1024); // drop the end-of-archive blocks
    bytes.extend_from_slice(h.as_bytes());
    let e = Scratch::new()
        .unpack(&bytes, &Limits::default(), &[])
        .unwrap_err();
    assert!(matches!(e, PackageError::HostileEntry { .. }), "{e:?}");
}
