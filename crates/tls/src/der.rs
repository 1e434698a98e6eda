//! A minimal DER reader: just enough X.509 to load an existing CA (subject, public key, key
//! identifier, basic constraints, validity) and, in tests, to inspect minted leaves.
//!
//! It never panics: every read is bounds-checked and a malformed input yields `None`.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// DER tags used here.
pub(crate) mod tag {
    pub(crate) const BOOLEAN: u8 = 0x01;
    pub(crate) const INTEGER: u8 = 0x02;
    #[cfg(test)]
    pub(crate) const BIT_STRING: u8 = 0x03;
    pub(crate) const OCTET_STRING: u8 = 0x04;
    pub(crate) const OID: u8 = 0x06;
    pub(crate) const UTF8_STRING: u8 = 0x0c;
    pub(crate) const PRINTABLE_STRING: u8 = 0x13;
    pub(crate) const TELETEX_STRING: u8 = 0x14;
    pub(crate) const IA5_STRING: u8 = 0x16;
    pub(crate) const UTC_TIME: u8 = 0x17;
    pub(crate) const GENERALIZED_TIME: u8 = 0x18;
    pub(crate) const UNIVERSAL_STRING: u8 = 0x1c;
    pub(crate) const BMP_STRING: u8 = 0x1e;
    pub(crate) const SEQUENCE: u8 = 0x30;
    pub(crate) const SET: u8 = 0x31;
    /// `[0]` constructed (version).
    pub(crate) const CTX0: u8 = 0xa0;
    /// `[3]` constructed (extensions).
    pub(crate) const CTX3: u8 = 0xa3;
}

/// Encoded object identifiers (content bytes only).
pub(crate) mod oid {
    /// id-ce-subjectKeyIdentifier 2.5.29.14
    pub(crate) const SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
    /// id-ce-basicConstraints 2.5.29.19
    pub(crate) const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    /// id-ce-keyUsage 2.5.29.15
    #[cfg(test)]
    pub(crate) const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
    /// id-ce-subjectAltName 2.5.29.17
    #[cfg(test)]
    pub(crate) const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    /// id-ce-authorityKeyIdentifier 2.5.29.35
    #[cfg(test)]
    pub(crate) const AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1d, 0x23];
    /// id-ce-extKeyUsage 2.5.29.37
    #[cfg(test)]
    pub(crate) const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
    /// id-kp-serverAuth 1.3.6.1.5.5.7.3.1
    #[cfg(test)]
    pub(crate) const KP_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
    /// id-at-commonName 2.5.4.3
    #[cfg(test)]
    pub(crate) const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
}

/// One tag-length-value element.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    /// The (single-byte) tag.
    pub(crate) tag: u8,
    /// The content octets.
    pub(crate) content: &'a [u8],
    /// The whole element, header included.
    pub(crate) raw: &'a [u8],
}

/// Sequential reader over concatenated DER elements.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Self { rest: input }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Reads the next element, whatever its tag.
    pub(crate) fn next_tlv(&mut self) -> Option<Tlv<'a>> {
        let input = self.rest;
        let tag = *input.first()?;
        if tag & 0x1f == 0x1f {
            // High tag numbers never occur in the structures read here.
            return None;
        }
        let first = *input.get(1)?;
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2usize)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let bytes = input.get(2..2 + n)?;
            let len = bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, 2 + n)
        };
        let end = header.checked_add(len)?;
        let raw = input.get(..end)?;
        let content = raw.get(header..)?;
        self.rest = input.get(end..)?;
        Some(Tlv { tag, content, raw })
    }

    /// Reads the next element and requires it to carry `tag`.
    pub(crate) fn expect(&mut self, tag: u8) -> Option<Tlv<'a>> {
        let tlv = self.next_tlv()?;
        (tlv.tag == tag).then_some(tlv)
    }

    /// Reads the next element only if it carries `tag`.
    pub(crate) fn optional(&mut self, tag: u8) -> Option<Tlv<'a>> {
        if self.peek_tag() == Some(tag) {
            self.next_tlv()
        } else {
            None
        }
    }
}

/// One X.509 extension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extension<'a> {
    pub(crate) oid: &'a [u8],
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) critical: bool,
    /// Content of the extnValue OCTET STRING.
    pub(crate) value: &'a [u8],
}

/// The parts of a certificate this crate looks at.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo<'a> {
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) serial: &'a [u8],
    pub(crate) issuer: Tlv<'a>,
    pub(crate) subject: Tlv<'a>,
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
    /// The whole SubjectPublicKeyInfo element.
    pub(crate) spki: &'a [u8],
    pub(crate) extensions: Vec<Extension<'a>>,
}

impl<'a> CertInfo<'a> {
    /// Parses a DER certificate.
    pub(crate) fn parse(der: &'a [u8]) -> Option<Self> {
        let mut outer = Reader::new(der);
        let cert = outer.expect(tag::SEQUENCE)?;
        if !outer.is_empty() {
            return None;
        }
        let mut cert = Reader::new(cert.content);
        let tbs = cert.expect(tag::SEQUENCE)?;
        let mut tbs = Reader::new(tbs.content);
        tbs.optional(tag::CTX0);
        let serial = tbs.expect(tag::INTEGER)?.content;
        tbs.expect(tag::SEQUENCE)?; // signature algorithm
        let issuer = tbs.expect(tag::SEQUENCE)?;
        let validity = tbs.expect(tag::SEQUENCE)?;
        let mut validity = Reader::new(validity.content);
        let not_before = parse_time(validity.next_tlv()?)?;
        let not_after = parse_time(validity.next_tlv()?)?;
        let subject = tbs.expect(tag::SEQUENCE)?;
        let spki = tbs.expect(tag::SEQUENCE)?.raw;
        tbs.optional(0x81); // issuerUniqueID
        tbs.optional(0x82); // subjectUniqueID
        let mut extensions = Vec::new();
        if let Some(exts) = tbs.optional(tag::CTX3) {
            let mut exts = Reader::new(exts.content);
            let list = exts.expect(tag::SEQUENCE)?;
            let mut list = Reader::new(list.content);
            while !list.is_empty() {
                let ext = list.expect(tag::SEQUENCE)?;
                let mut ext = Reader::new(ext.content);
                let oid = ext.expect(tag::OID)?.content;
                let critical = match ext.optional(tag::BOOLEAN) {
                    Some(b) => b.content.first().is_some_and(|v| *v != 0),
                    None => false,
                };
                let value = ext.expect(tag::OCTET_STRING)?.content;
                extensions.push(Extension {
                    oid,
                    critical,
                    value,
                });
            }
        }
        Some(Self {
            serial,
            issuer,
            subject,
            not_before,
            not_after,
            spki,
            extensions,
        })
    }

    /// The extension with this OID, if present.
    pub(crate) fn extension(&self, oid: &[u8]) -> Option<&Extension<'a>> {
        self.extensions.iter().find(|e| e.oid == oid)
    }

    /// The subjectKeyIdentifier value, if present and well formed.
    pub(crate) fn subject_key_id(&self) -> Option<&'a [u8]> {
        let ext = self.extension(oid::SUBJECT_KEY_ID)?;
        Some(Reader::new(ext.value).expect(tag::OCTET_STRING)?.content)
    }

    /// Whether basicConstraints says `cA = TRUE`.
    pub(crate) fn is_ca(&self) -> bool {
        let Some(ext) = self.extension(oid::BASIC_CONSTRAINTS) else {
            return false;
        };
        let Some(seq) = Reader::new(ext.value).expect(tag::SEQUENCE) else {
            return false;
        };
        Reader::new(seq.content)
            .optional(tag::BOOLEAN)
            .is_some_and(|b| b.content.first().is_some_and(|v| *v != 0))
    }
}

/// Decodes an encoded OID into its arcs.
pub(crate) fn decode_oid(content: &[u8]) -> Option<Vec<u64>> {
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    let mut in_progress = false;
    for &b in content {
        if !in_progress && b == 0x80 {
            return None; // non-minimal encoding
        }
        value = value.checked_mul(128)?.checked_add(u64::from(b & 0x7f))?;
        in_progress = b & 0x80 != 0;
        if !in_progress {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    if in_progress || arcs.is_empty() {
        return None;
    }
    Some(arcs)
}

fn digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0')),
    )
}

/// Parses UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
pub(crate) fn parse_time(tlv: Tlv<'_>) -> Option<OffsetDateTime> {
    let s = tlv.content;
    let (year, rest) = match tlv.tag {
        tag::UTC_TIME if s.len() == 13 => {
            let yy = digits(s.get(..2)?)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        tag::GENERALIZED_TIME if s.len() == 15 => (digits(s.get(..4)?)?, s.get(4..)?),
        _ => return None,
    };
    if rest.get(10) != Some(&b'Z') {
        return None;
    }
    let month = u8::try_from(digits(rest.get(0..2)?)?).ok()?;
    let day = u8::try_from(digits(rest.get(2..4)?)?).ok()?;
    let hour = u8::try_from(digits(rest.get(4..6)?)?).ok()?;
    let minute = u8::try_from(digits(rest.get(6..8)?)?).ok()?;
    let second = u8::try_from(digits(rest.get(8..10)?)?).ok()?;
    let date =
        Date::from_calendar_date(i32::try_from(year).ok()?, Month::try_from(month).ok()?, day)
            .ok()?;
    let time = Time::from_hms(hour, minute, second).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_rejects_truncation_and_long_lengths() {
        assert!(Reader::new(&[]).next_tlv().is_none());
        assert!(Reader::new(&[0x30]).next_tlv().is_none());
        assert!(Reader::new(&[0x30, 0x05, 0x01]).next_tlv().is_none());
        assert!(Reader::new(&[0x30, 0x85, 1, 1, 1, 1, 1])
            .next_tlv()
            .is_none());
        assert!(Reader::new(&[0x30, 0x80]).next_tlv().is_none());
        assert!(Reader::new(&[0x1f, 0x01, 0x00]).next_tlv().is_none());
        let mut r = Reader::new(&[0x04, 0x81, 0x02, 0xaa, 0xbb, 0x05, 0x00]);
        let t = r.next_tlv().expect("long-form length");
        assert_eq!(t.content, &[0xaa, 0xbb]);
        assert_eq!(r.expect(0x05).map(|t| t.content.len()), Some(0));
        assert!(r.is_empty());
    }

    #[test]
    fn oid_decoding() {
        assert_eq!(decode_oid(&[0x55, 0x04, 0x03]), Some(vec![2, 5, 4, 3]));
        assert_eq!(
            decode_oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]),
            Some(vec![1, 2, 840, 113549, 1, 9, 1])
        );
        assert_eq!(decode_oid(&[0x2a, 0x86]), None);
        assert_eq!(decode_oid(&[]), None);
        assert_eq!(decode_oid(&[0x80, 0x01]), None);
    }

    #[test]
    fn times() {
        let utc = Tlv {
            tag: tag::UTC_TIME,
            content: b"491231235959Z",
            raw: &[],
        };
        assert_eq!(parse_time(utc).map(|t| t.year()), Some(2049));
        let utc = Tlv {
            tag: tag::UTC_TIME,
            content: b"500101000000Z",
            raw: &[],
        };
        assert_eq!(parse_time(utc).map(|t| t.year()), Some(1950));
        let gen = Tlv {
            tag: tag::GENERALIZED_TIME,
            content: b"20990230000000Z",
            raw: &[],
        };
        assert!(parse_time(gen).is_none(), "30 February");
        let gen = Tlv {
            tag: tag::GENERALIZED_TIME,
            content: b"2099013000000+Z",
            raw: &[],
        };
        assert!(parse_time(gen).is_none());
    }
}
