//! Safe XML: strict decoding by the declared charset, no DTDs, no entities, bounded size, and
//! elements matched by namespace URI and local name, never by prefix.
//!
//! The platform answers in GBK or UTF-8, declared in the prolog and the `Content-Type`. A byte
//! that does not decode is an error, not a replacement character: a licence number with a
//! `U+FFFD` in it would be a silently wrong fact. A document that declares a DTD is refused
//! before anything in it is expanded (billion-laughs and external-entity attacks both need one).

use std::borrow::Cow;

use encoding_rs::Encoding;
use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

/// The largest document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 10 * 1024 * 1024;

/// Nesting deeper than this is not a licence answer.
const MAX_DEPTH: usize = 64;

/// Why a document is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("document of {0} bytes is over the 10 MiB limit")]
    TooLarge(usize),
    #[error("the document declares a DTD or entities: refused without expanding it")]
    Dtd,
    #[error("charset {0:?} is not GBK or UTF-8")]
    UnknownCharset(String),
    #[error("the prolog declares {prolog} but Content-Type says {header}")]
    CharsetMismatch { prolog: String, header: String },
    #[error("byte {offset} does not decode as {charset}")]
    Undecodable { charset: String, offset: usize },
    #[error("entity &{0}; is not allowed (only the five predefined ones and character references)")]
    Entity(String),
    #[error("not well-formed (cut off?): {0}")]
    Malformed(String),
    #[error("nested more than {MAX_DEPTH} deep")]
    TooDeep,
}

/// An element: namespace URI, local name, text content and children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub ns: Option<String>,
    pub local: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child with this namespace and local name.
    pub fn child(&self, ns: &str, local: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, local))
    }

    /// Every child with this namespace and local name.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        local: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, local))
    }

    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.local == local
    }

    /// Text of a child, trimmed; `None` when absent or empty.
    pub fn child_text(&self, ns: &str, local: &str) -> Option<String> {
        self.child(ns, local)
            .map(|c| c.text.trim().to_string())
            .filter(|t| !t.is_empty())
    }
}

/// The encoding named in `<?xml … encoding="…"?>`, if the document starts with a prolog.
fn prolog_charset(bytes: &[u8]) -> Option<String> {
    // The prolog is ASCII in both GBK and UTF-8.
    let head = &bytes[..bytes.len().min(200)];
    let head = std::str::from_utf8(head).ok().or_else(|| {
        let end = head.iter().position(|&b| b == b'>')? + 1;
        std::str::from_utf8(&head[..end]).ok()
    })?;
    let prolog = head.strip_prefix("<?xml")?;
    let prolog = &prolog[..prolog.find("?>")?];
    let at = prolog.find("encoding")?;
    let rest = prolog[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &rest[1..];
    Some(value[..value.find(quote)?].to_string())
}

/// The charset parameter of a `Content-Type`.
pub fn header_charset(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("charset")).then(|| v.trim().trim_matches('"').to_string())
    })
}

fn encoding_for(label: &str) -> Result<&'static Encoding, XmlError> {
    match label.trim().to_ascii_uppercase().as_str() {
        "UTF-8" | "UTF8" => Ok(encoding_rs::UTF_8),
        // GB2312 is a subset of GBK; decoding it as GBK is exact.
        "GBK" | "GB2312" | "CP936" => Ok(encoding_rs::GBK),
        "GB18030" => Ok(encoding_rs::GB18030),
        _ => Err(XmlError::UnknownCharset(label.to_string())),
    }
}

/// Decodes a document strictly by its declared charset (prolog and `Content-Type` must agree
/// when both are given; UTF-8 when neither is).
pub fn decode<'a>(bytes: &'a [u8], content_type: Option<&str>) -> Result<Cow<'a, str>, XmlError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(XmlError::TooLarge(bytes.len()));
    }
    let prolog = prolog_charset(bytes);
    let header = content_type.and_then(header_charset);
    let label = match (&prolog, &header) {
        (Some(p), Some(h)) if encoding_for(p)? != encoding_for(h)? => {
            return Err(XmlError::CharsetMismatch {
                prolog: p.clone(),
                header: h.clone(),
            });
        }
        (Some(p), _) => p.clone(),
        (None, Some(h)) => h.clone(),
        (None, None) => "UTF-8".to_string(),
    };
    let encoding = encoding_for(&label)?;
    encoding
        .decode_without_bom_handling_and_without_replacement(bytes)
        .ok_or_else(|| {
            // Find the first bad byte for the message: decode with replacement and compare.
            let (text, _) = encoding.decode_without_bom_handling(bytes);
            let offset = text.find('\u{FFFD}').map_or(0, |chars_before| {
                let prefix = &text[..chars_before];
                encoding.encode(prefix).0.len()
            });
            XmlError::Undecodable {
                charset: encoding.name().to_string(),
                offset,
            }
        })
}

/// Parses decoded text into an element tree.
pub fn parse(text: &str) -> Result<Element, XmlError> {
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Element> = vec![Element::default()];
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| XmlError::Malformed(e.to_string()))?;
        let ns = match ns {
            ResolveResult::Bound(n) => Some(n.as_ref().to_string()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(p) => return Err(XmlError::Malformed(format!("undeclared prefix {p}"))),
        };
        match event {
            Event::DocType(_) => return Err(XmlError::Dtd),
            Event::Start(e) => {
                if stack.len() > MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                let local = e.local_name().as_ref().to_string();
                stack.push(Element {
                    ns,
                    local,
                    ..Element::default()
                });
            }
            Event::Empty(e) => {
                let local = e.local_name().as_ref().to_string();
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(Element {
                        ns,
                        local,
                        ..Element::default()
                    });
                }
            }
            Event::End(_) => {
                let done = stack
                    .pop()
                    .ok_or_else(|| XmlError::Malformed("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Err(XmlError::Malformed("unbalanced end tag".into())),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(c) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&c.into_inner());
                }
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| XmlError::Malformed(e.to_string()))?
                } else {
                    match r.xml10_content().as_ref() {
                        "amp" => Some('&'),
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "quot" => Some('"'),
                        "apos" => Some('\''),
                        other => return Err(XmlError::Entity(other.to_string())),
                    }
                };
                if let (Some(c), Some(top)) = (resolved, stack.last_mut()) {
                    top.text.push(c);
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if stack.len() != 1 {
        return Err(XmlError::Malformed(
            "the document ends inside an element (cut off?)".into(),
        ));
    }
    let root = stack.pop().unwrap_or_default();
    root.children
        .into_iter()
        .next()
        .ok_or_else(|| XmlError::Malformed("no root element".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "http://zwfw.yn.gov.cn/licence/v1";

    #[test]
    fn gbk_is_decoded_strictly() {
        let text = "<?xml version=\"1.0\" encoding=\"GBK\"?><a xmlns=\"urn:x\">建设工程规划许可证</a>";
        let (bytes, _, bad) = encoding_rs::GBK.encode(text);
        assert!(!bad);
        let decoded = decode(&bytes, Some("text/xml; charset=GBK")).unwrap();
        assert_eq!(parse(&decoded).unwrap().text, "建设工程规划许可证");
        // Read as UTF-8 it would be garbage: the declared charset is what counts.
        assert!(decode(&bytes, Some("text/xml; charset=UTF-8")).is_err());
        let mut broken = bytes.into_owned();
        let at = broken.len() - 6;
        broken[at] = 0xFF;
        assert!(matches!(decode(&broken, None), Err(XmlError::Undecodable { .. })));
    }

    #[test]
    fn prefixes_do_not_matter() {
        for doc in [
            format!("<lic:R xmlns:lic=\"{NS}\"><lic:Code>0</lic:Code></lic:R>"),
            format!("<ns2:R xmlns:ns2=\"{NS}\"><ns2:Code>0</ns2:Code></ns2:R>"),
            format!("<R xmlns=\"{NS}\"><Code>0</Code></R>"),
        ] {
            let e = parse(&doc).unwrap();
            assert!(e.is(NS, "R"));
            assert_eq!(e.child_text(NS, "Code").as_deref(), Some("0"));
        }
        // Same local name, other namespace: not a match.
        let e = parse("<R xmlns=\"urn:other\"><Code>0</Code></R>").unwrap();
        assert_eq!(e.child_text(NS, "Code"), None);
    }

    #[test]
    fn dtds_entities_and_cut_off_documents_are_refused() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><a>&lol2;</a>";
        assert_eq!(parse(bomb), Err(XmlError::Dtd));
        assert_eq!(parse("<a>&ext;</a>"), Err(XmlError::Entity("ext".into())));
        assert_eq!(parse("<a>&amp;&#x4E2D;</a>").unwrap().text, "&中");
        assert!(matches!(parse("<a><b>cut"), Err(XmlError::Malformed(_))));
        assert!(matches!(
            decode(&vec![b' '; MAX_DOCUMENT_BYTES + 1], None),
            Err(XmlError::TooLarge(_))
        ));
        assert!(matches!(
            decode(
                b"<?xml version=\"1.0\" encoding=\"GBK\"?><a/>",
                Some("text/xml; charset=UTF-8")
            ),
            Err(XmlError::CharsetMismatch { .. })
        ));
    }
}
