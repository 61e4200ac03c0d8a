//! CoRE link format (CF 40, RFC 6690) as LwM2M uses it: the Register/Update
//! object list (Core 1.1 §6.2.1, reference §1) and Discover answers (Core
//! 1.1 §5.2.7.3 / §6.3.2, reference §2).
//!
//! Written without spaces (OMA issue #487); read tolerantly: quoted values with
//! `\` escapes, optional whitespace between links and parameters.

use std::fmt::{self, Write as _};

use super::CodecError;
use crate::model::{ContentFormat, Path};

const FORMAT: ContentFormat = ContentFormat::LinkFormat;

fn malformed(reason: impl Into<String>) -> CodecError {
    CodecError::malformed(FORMAT, reason)
}

/// An attribute value, remembering whether it was quoted so links round-trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    /// `name=value`.
    Token(String),
    /// `name="value"` (RFC 6690 quoted-string; `rt` and space lists).
    Quoted(String),
}

impl AttrValue {
    /// The value without quotes.
    pub fn as_str(&self) -> &str {
        match self {
            AttrValue::Token(s) | AttrValue::Quoted(s) => s,
        }
    }
}

/// One link parameter: `;name` or `;name=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Parameter name, e.g. `ver`, `pmin`, `ct`.
    pub name: String,
    /// Its value; `None` for a bare `;name`.
    pub value: Option<AttrValue>,
}

impl Attr {
    /// `;name=value` with an unquoted value.
    pub fn token(name: &str, value: impl ToString) -> Attr {
        Attr {
            name: name.to_owned(),
            value: Some(AttrValue::Token(value.to_string())),
        }
    }
    /// `;name="value"`.
    pub fn quoted(name: &str, value: impl ToString) -> Attr {
        Attr {
            name: name.to_owned(),
            value: Some(AttrValue::Quoted(value.to_string())),
        }
    }
}

/// One link: `<target>` and its parameters in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The URI between `<` and `>`, e.g. `/3/0`.
    pub target: String,
    /// Parameters in the order written.
    pub attrs: Vec<Attr>,
}

impl Link {
    /// A link to an LwM2M path with no parameters.
    pub fn to_path(path: Path) -> Link {
        Link {
            target: path.to_string(),
            attrs: Vec::new(),
        }
    }

    /// The target as an LwM2M path, if it is one.
    pub fn path(&self) -> Option<Path> {
        parse_target(&self.target)
    }

    /// The first value of parameter `name` (`Some("")` for a bare `;name`).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_ref().map_or("", AttrValue::as_str))
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.target)?;
        for attr in &self.attrs {
            write!(f, ";{}", attr.name)?;
            match &attr.value {
                None => {}
                Some(AttrValue::Token(v)) => write!(f, "={v}")?,
                Some(AttrValue::Quoted(v)) => {
                    f.write_str("=\"")?;
                    for c in v.chars() {
                        if c == '"' || c == '\\' {
                            f.write_char('\\')?;
                        }
                        f.write_char(c)?;
                    }
                    f.write_char('"')?;
                }
            }
        }
        Ok(())
    }
}

/// Joins links with `,` and no spaces.
pub fn write(links: &[Link]) -> String {
    links
        .iter()
        .map(Link::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `/o` or `/o/i/...` to a path; `None` for anything else.
fn parse_target(target: &str) -> Option<Path> {
    let rest = target.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    Path::from_segments(&segments)
}

/// Parses a link-format payload. Linear in the input; never panics.
pub fn parse(bytes: &[u8]) -> Result<Vec<Link>, CodecError> {
    let text = std::str::from_utf8(bytes).map_err(|_| malformed("link format is not UTF-8"))?;
    let mut cursor = Cursor { rest: text };
    let mut links = Vec::new();
    cursor.skip_space();
    if cursor.rest.is_empty() {
        return Ok(links);
    }
    loop {
        links.push(cursor.link()?);
        cursor.skip_space();
        match cursor.next() {
            None => return Ok(links),
            Some(',') => cursor.skip_space(),
            Some(c) => return Err(malformed(format!("unexpected {c:?} after a link"))),
        }
    }
}

struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> Option<char> {
        let c = self.rest.chars().next()?;
        self.rest = &self.rest[c.len_utf8()..];
        Some(c)
    }

    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    /// Takes characters up to (not including) the first that `stop` accepts.
    fn take_until(&mut self, stop: impl Fn(char) -> bool) -> &'a str {
        let end = self.rest.find(stop).unwrap_or(self.rest.len());
        let (taken, rest) = self.rest.split_at(end);
        self.rest = rest;
        taken
    }

    fn link(&mut self) -> Result<Link, CodecError> {
        if self.next() != Some('<') {
            return Err(malformed("a link must start with '<'"));
        }
        let target = self.take_until(|c| c == '>' || c == '<');
        if self.next() != Some('>') {
            return Err(malformed("unterminated link target"));
        }
        let mut link = Link {
            target: target.to_owned(),
            attrs: Vec::new(),
        };
        loop {
            self.skip_space();
            if self.peek() != Some(';') {
                return Ok(link);
            }
            self.next();
            self.skip_space();
            link.attrs.push(self.attr()?);
        }
    }

    fn attr(&mut self) -> Result<Attr, CodecError> {
        let name = self.take_until(|c| !is_token_char(c));
        if name.is_empty() {
            return Err(malformed("empty parameter name"));
        }
        self.skip_space();
        if self.peek() != Some('=') {
            return Ok(Attr {
                name: name.to_owned(),
                value: None,
            });
        }
        self.next();
        self.skip_space();
        let value = if self.peek() == Some('"') {
            self.next();
            AttrValue::Quoted(self.quoted()?)
        } else {
            let token = self.take_until(|c| c == ';' || c == ',' || c.is_whitespace());
            if token.contains(['"', '<', '>']) {
                return Err(malformed(format!("bad parameter value {token:?}")));
            }
            AttrValue::Token(token.to_owned())
        };
        Ok(Attr {
            name: name.to_owned(),
            value: Some(value),
        })
    }

    /// The rest of a quoted-string after its opening quote (RFC 6690 §2, `\` escapes).
    fn quoted(&mut self) -> Result<String, CodecError> {
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err(malformed("unterminated quoted value")),
                Some('"') => return Ok(out),
                Some('\\') => out.push(self.next().ok_or_else(|| malformed("dangling escape"))?),
                Some(c) => out.push(c),
            }
        }
    }
}

/// RFC 5987 parmname characters, which RFC 6690 link-extension names use.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$&+-.^_`|~*".contains(c)
}

/// One object in a Register payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectLinks {
    /// Object id.
    pub id: u16,
    /// Object version (`ver`), sent when it differs from the enabler's
    /// default or when unsure (reference §1).
    pub version: Option<String>,
    /// Existing instance ids, ascending.
    pub instances: Vec<u16>,
}

/// What a Register or Update payload says: root path, formats, objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterLinks {
    /// Alternate path from `<..>;rt="oma.lwm2m"`, `/` when absent.
    pub root: String,
    /// Content formats from the root link's `ct` (empty when not announced).
    pub content_formats: Vec<u16>,
    /// Objects in ascending id order.
    pub objects: Vec<ObjectLinks>,
}

/// Builds the Register/Update payload: `</>;rt="oma.lwm2m";ct=..` when
/// `content_formats` is not empty (one code bare, several as a quoted space
/// list), then per object `</o>` (with `;ver=`) if it has a version or no
/// instances, then `</o/i>` per instance. Reproduces reference §1's
/// `</>;rt="oma.lwm2m";ct=110,</1/0>,</3/0>,</3303>;ver=1.1,</3303/0>`.
pub fn register_payload(content_formats: &[u16], objects: &[ObjectLinks]) -> String {
    let mut links = Vec::new();
    match content_formats {
        [] => {}
        [one] => links.push(Link {
            target: "/".into(),
            attrs: vec![Attr::quoted("rt", "oma.lwm2m"), Attr::token("ct", one)],
        }),
        many => {
            let list: Vec<String> = many.iter().map(u16::to_string).collect();
            links.push(Link {
                target: "/".into(),
                attrs: vec![
                    Attr::quoted("rt", "oma.lwm2m"),
                    Attr::quoted("ct", list.join(" ")),
                ],
            });
        }
    }
    for object in objects {
        if object.version.is_some() || object.instances.is_empty() {
            let mut link = Link::to_path(Path::object(object.id));
            if let Some(v) = &object.version {
                link.attrs.push(Attr::token("ver", v));
            }
            links.push(link);
        }
        for &instance in &object.instances {
            links.push(Link::to_path(Path::instance(object.id, instance)));
        }
    }
    write(&links)
}

/// Reads a Register/Update payload (the server side). Links outside the
/// root path or not naming `/o` or `/o/i` are malformed (4.00). A `ver`
/// on an instance link (Wakaama sends `</3/0>;ver=1.2`) counts for its object.
pub fn parse_register_payload(bytes: &[u8]) -> Result<RegisterLinks, CodecError> {
    let links = parse(bytes)?;
    let root_link = links.iter().find(|l| l.attr("rt") == Some("oma.lwm2m"));
    let root = root_link.map_or("/", |l| l.target.as_str());
    let prefix = root.trim_end_matches('/');
    let content_formats = match root_link.and_then(|l| l.attr("ct")) {
        None => Vec::new(),
        Some(list) => list
            .split_whitespace()
            .map(|code| {
                code.parse::<u16>()
                    .map_err(|_| malformed(format!("bad ct {code:?}")))
            })
            .collect::<Result<_, _>>()?,
    };
    let mut objects: Vec<ObjectLinks> = Vec::new();
    for link in &links {
        if root_link.is_some_and(|r| std::ptr::eq(r, link)) {
            continue;
        }
        let path = link
            .target
            .strip_prefix(prefix)
            .and_then(parse_target)
            .filter(|p| p.resource.is_none())
            .ok_or_else(|| {
                malformed(format!(
                    "{:?} is not an object or instance link",
                    link.target
                ))
            })?;
        let index = match objects.iter().position(|o| o.id == path.object) {
            Some(index) => index,
            None => {
                objects.push(ObjectLinks {
                    id: path.object,
                    ..ObjectLinks::default()
                });
                objects.len() - 1
            }
        };
        let Some(object) = objects.get_mut(index) else {
            continue;
        };
        if let Some(ver) = link.attr("ver")
            && (path.instance.is_none() || object.version.is_none())
        {
            object.version = Some(ver.to_owned());
        }
        if let Some(instance) = path.instance
            && !object.instances.contains(&instance)
        {
            object.instances.push(instance);
        }
    }
    objects.sort_by_key(|o| o.id);
    for object in &mut objects {
        object.instances.sort_unstable();
    }
    Ok(RegisterLinks {
        root: root.to_owned(),
        content_formats,
        objects,
    })
}

/// Notification attributes as Discover shows them (Core 1.1 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkAttributes {
    /// Minimum period, seconds.
    pub pmin: Option<u32>,
    /// Maximum period, seconds.
    pub pmax: Option<u32>,
    /// Greater-than threshold.
    pub gt: Option<f64>,
    /// Less-than threshold.
    pub lt: Option<f64>,
    /// Step.
    pub st: Option<f64>,
    /// Minimum evaluation period, seconds (new in 1.1).
    pub epmin: Option<u32>,
    /// Maximum evaluation period, seconds (new in 1.1).
    pub epmax: Option<u32>,
}

/// One line of a Discover answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiscoverEntry {
    /// The object, instance, resource or resource instance.
    pub path: Option<Path>,
    /// Object version, on object links.
    pub ver: Option<String>,
    /// Number of instances of a multiple resource (0-255, Leshan ATTR).
    pub dim: Option<u8>,
    /// Attributes attached at exactly this level.
    pub attrs: LinkAttributes,
}

impl DiscoverEntry {
    /// An entry for `path` with nothing attached.
    pub fn new(path: Path) -> Self {
        DiscoverEntry {
            path: Some(path),
            ..Self::default()
        }
    }
}

/// Builds a Discover answer, parameters in the order of Leshan's vectors:
/// `ver`, `dim`, `pmin`, `pmax`, `st`, `lt`, `gt`, `epmin`, `epmax`, e.g.
/// `</3/0/9>;pmin=100;pmax=200;st=1;lt=20;gt=50`. Entries without a path are skipped.
pub fn discover_payload(entries: &[DiscoverEntry]) -> String {
    let links: Vec<Link> = entries
        .iter()
        .filter_map(|e| {
            let mut link = Link::to_path(e.path?);
            let a = &e.attrs;
            let mut push = |name: &str, value: Option<String>| {
                if let Some(v) = value {
                    link.attrs.push(Attr::token(name, v));
                }
            };
            push("ver", e.ver.clone());
            push("dim", e.dim.map(|v| v.to_string()));
            push("pmin", a.pmin.map(|v| v.to_string()));
            push("pmax", a.pmax.map(|v| v.to_string()));
            push("st", a.st.map(|v| v.to_string()));
            push("lt", a.lt.map(|v| v.to_string()));
            push("gt", a.gt.map(|v| v.to_string()));
            push("epmin", a.epmin.map(|v| v.to_string()));
            push("epmax", a.epmax.map(|v| v.to_string()));
            Some(link)
        })
        .collect();
    write(&links)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &str = r#"</>;rt="oma.lwm2m";ct=110,</1/0>,</3/0>,</3303>;ver=1.1,</3303/0>"#;

    #[test]
    fn register_payload_matches_reference_vector() {
        let objects = [
            ObjectLinks {
                id: 1,
                version: None,
                instances: vec![0],
            },
            ObjectLinks {
                id: 3,
                version: None,
                instances: vec![0],
            },
            ObjectLinks {
                id: 3303,
                version: Some("1.1".into()),
                instances: vec![0],
            },
        ];
        assert_eq!(register_payload(&[110], &objects), REGISTER);
        let parsed = parse_register_payload(REGISTER.as_bytes()).unwrap();
        assert_eq!(
            parsed,
            RegisterLinks {
                root: "/".into(),
                content_formats: vec![110],
                objects: objects.to_vec()
            }
        );
    }

    #[test]
    fn several_formats_are_a_quoted_list_and_versions_go_on_object_links() {
        let objects = [
            ObjectLinks {
                id: 1,
                version: Some("1.1".into()),
                instances: vec![0],
            },
            ObjectLinks {
                id: 9,
                version: None,
                instances: vec![],
            },
        ];
        let payload = register_payload(&[60, 110, 112, 11542], &objects);
        assert_eq!(
            payload,
            r#"</>;rt="oma.lwm2m";ct="60 110 112 11542",</1>;ver=1.1,</1/0>,</9>"#
        );
        let parsed = parse_register_payload(payload.as_bytes()).unwrap();
        assert_eq!(parsed.content_formats, vec![60, 110, 112, 11542]);
        assert_eq!(parsed.objects, objects.to_vec());
        assert_eq!(register_payload(&[], &objects[1..]), "</9>");
    }

    #[test]
    fn register_parser_handles_real_payloads() {
        // Wakaama: ver on an instance link, no root link.
        let parsed = parse_register_payload(b"</1/0>,</3/0>;ver=1.2").unwrap();
        assert_eq!(parsed.root, "/");
        assert!(parsed.content_formats.is_empty());
        assert_eq!(
            parsed.objects[1],
            ObjectLinks {
                id: 3,
                version: Some("1.2".into()),
                instances: vec![0]
            }
        );
        // Alternate path prefixed to every object, spaces tolerated.
        let parsed =
            parse_register_payload(br#"</lwm2m>;rt="oma.lwm2m", </lwm2m/3/0> , </lwm2m/3/1>"#)
                .unwrap();
        assert_eq!(parsed.root, "/lwm2m");
        assert_eq!(
            parsed.objects,
            vec![ObjectLinks {
                id: 3,
                version: None,
                instances: vec![0, 1]
            }]
        );
        // Refused: links that are not objects or instances, bad ct, broken syntax.
        for bad in [
            &b"</rd>"[..],
            b"</3/0/1>",
            b"</3/x>",
            br#"</>;rt="oma.lwm2m";ct="110 x""#,
            b"</3/0",
            b"</3/0>;ver=\"1.1",
            b"</3/0>x",
            b"</3/0>;=1",
            b"\xFF",
        ] {
            assert!(
                parse_register_payload(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_register_payload(b"").unwrap().objects.is_empty());
    }

    #[test]
    fn discover_vectors() {
        let entries = [
            DiscoverEntry {
                attrs: LinkAttributes {
                    pmin: Some(100),
                    pmax: Some(200),
                    ..Default::default()
                },
                ..DiscoverEntry::new(Path::object(3))
            },
            DiscoverEntry::new(Path::instance(3, 0)),
            DiscoverEntry::new(Path::resource(3, 0, 0)),
            DiscoverEntry {
                dim: Some(2),
                ..DiscoverEntry::new(Path::resource(3, 0, 7))
            },
            DiscoverEntry::new(Path::resource(3, 0, 9)),
            DiscoverEntry::new(Path::resource(3, 0, 16)),
        ];
        assert_eq!(
            discover_payload(&entries),
            "</3>;pmin=100;pmax=200,</3/0>,</3/0/0>,</3/0/7>;dim=2,</3/0/9>,</3/0/16>"
        );
        let attrs = LinkAttributes {
            pmin: Some(100),
            pmax: Some(200),
            st: Some(1.0),
            lt: Some(20.0),
            gt: Some(50.0),
            ..Default::default()
        };
        let nine = DiscoverEntry {
            attrs,
            ..DiscoverEntry::new(Path::resource(3, 0, 9))
        };
        assert_eq!(
            discover_payload(&[nine]),
            "</3/0/9>;pmin=100;pmax=200;st=1;lt=20;gt=50"
        );
        let seven = [
            DiscoverEntry {
                dim: Some(2),
                ..DiscoverEntry::new(Path::resource(3, 0, 7))
            },
            DiscoverEntry::new(Path::resource_instance(3, 0, 7, 0)),
            DiscoverEntry::new(Path::resource_instance(3, 0, 7, 1)),
        ];
        let text = discover_payload(&seven);
        assert_eq!(text, "</3/0/7>;dim=2,</3/0/7/0>,</3/0/7/1>");
        let links = parse(text.as_bytes()).unwrap();
        assert_eq!(links[0].path(), Some(Path::resource(3, 0, 7)));
        assert_eq!(links[0].attr("dim"), Some("2"));
        assert_eq!(links[2].path(), Some(Path::resource_instance(3, 0, 7, 1)));
    }

    #[test]
    fn generic_links_round_trip_with_quotes_and_bare_params() {
        let text = r#"</a>;rt="x \"y\" \\";obs;ct=0,</b>"#;
        let links = parse(text.as_bytes()).unwrap();
        assert_eq!(links[0].attr("rt"), Some(r#"x "y" \"#));
        assert_eq!(links[0].attr("obs"), Some(""));
        assert_eq!(links[0].path(), None);
        assert_eq!(write(&links), text);
    }
}
