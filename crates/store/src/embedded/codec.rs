//! On-disk encodings of the embedded store's records.
//!
//! Hand-rolled little-endian layouts: the records are few and fixed, and a decoder that
//! checks every length turns a damaged file into [`Error::Corrupt`] instead of a panic.

use bytes::Bytes;

use crate::{Error, Event, KeyValue, Result, Revision};

/// A key's current state: `create_revision`, `mod_revision`, value.
pub(crate) fn encode_record(create: Revision, modr: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modr.to_le_bytes());
    out.extend_from_slice(value);
    out
}

pub(crate) fn decode_record(key: &str, raw: &[u8]) -> Result<KeyValue> {
    let mut r = Reader::new(raw, "record");
    let create_revision = r.i64()?;
    let mod_revision = r.i64()?;
    let value = Bytes::copy_from_slice(r.rest());
    Ok(KeyValue {
        key: key.to_owned(),
        value,
        create_revision,
        mod_revision,
    })
}

/// The `mod_revision` of an encoded record, without copying its value.
pub(crate) fn record_mod_revision(raw: &[u8]) -> Result<Revision> {
    let mut r = Reader::new(raw, "record");
    r.i64()?;
    r.i64()
}

const PUT: u8 = 1;
const DELETE: u8 = 2;

/// One revision's write, as kept in the history log: the event plus the wall-clock time
/// (for time-based compaction).
pub(crate) fn encode_log(event: &Event, unix_millis: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let (kind, key, value, create, prev) = match event {
        Event::Put { kv, prev } => (
            PUT,
            &kv.key,
            &kv.value[..],
            kv.create_revision,
            prev.as_ref(),
        ),
        Event::Delete { prev, .. } => (DELETE, &prev.key, &[][..], 0, Some(prev)),
    };
    out.push(kind);
    out.extend_from_slice(&unix_millis.to_le_bytes());
    out.extend_from_slice(&create.to_le_bytes());
    put_bytes(&mut out, key.as_bytes());
    put_bytes(&mut out, value);
    match prev {
        None => out.push(0),
        Some(p) => {
            out.push(1);
            out.extend_from_slice(&p.create_revision.to_le_bytes());
            out.extend_from_slice(&p.mod_revision.to_le_bytes());
            put_bytes(&mut out, &p.value);
        }
    }
    out
}

/// Decodes the log entry written at `revision`: the event and its wall-clock time.
pub(crate) fn decode_log(revision: Revision, raw: &[u8]) -> Result<(Event, u64)> {
    let mut r = Reader::new(raw, "log entry");
    let kind = r.u8()?;
    let millis = r.u64()?;
    let create = r.i64()?;
    let key = String::from_utf8(r.bytes()?.to_vec())
        .map_err(|_| Error::Corrupt(format!("log entry {revision}: key is not UTF-8")))?;
    let value = Bytes::copy_from_slice(r.bytes()?);
    let prev = match r.u8()? {
        0 => None,
        1 => {
            let create_revision = r.i64()?;
            let mod_revision = r.i64()?;
            let value = Bytes::copy_from_slice(r.bytes()?);
            Some(KeyValue {
                key: key.clone(),
                value,
                create_revision,
                mod_revision,
            })
        }
        other => {
            return Err(Error::Corrupt(format!(
                "log entry {revision}: bad prev marker {other}"
            )))
        }
    };
    r.end()?;
    let event = match (kind, prev) {
        (PUT, prev) => Event::Put {
            kv: KeyValue {
                key,
                value,
                create_revision: create,
                mod_revision: revision,
            },
            prev,
        },
        (DELETE, Some(prev)) => Event::Delete { prev, revision },
        (kind, _) => {
            return Err(Error::Corrupt(format!(
                "log entry {revision}: bad kind {kind}"
            )))
        }
    };
    Ok((event, millis))
}

/// A log entry read in place, for checks that must not copy values.
pub(crate) struct LogView<'a> {
    pub(crate) is_put: bool,
    pub(crate) key: &'a str,
    pub(crate) create: Revision,
    pub(crate) value: &'a [u8],
}

pub(crate) fn view_log(revision: Revision, raw: &[u8]) -> Result<LogView<'_>> {
    let mut r = Reader::new(raw, "log entry");
    let kind = r.u8()?;
    r.u64()?;
    let create = r.i64()?;
    let key = std::str::from_utf8(r.bytes()?)
        .map_err(|_| Error::Corrupt(format!("log entry {revision}: key is not UTF-8")))?;
    let value = r.bytes()?;
    match kind {
        PUT | DELETE => Ok(LogView {
            is_put: kind == PUT,
            key,
            create,
            value,
        }),
        other => Err(Error::Corrupt(format!(
            "log entry {revision}: bad kind {other}"
        ))),
    }
}

/// The key a log entry is about, without decoding values.
pub(crate) fn log_key(revision: Revision, raw: &[u8]) -> Result<String> {
    let mut r = Reader::new(raw, "log entry");
    r.u8()?;
    r.u64()?;
    r.i64()?;
    String::from_utf8(r.bytes()?.to_vec())
        .map_err(|_| Error::Corrupt(format!("log entry {revision}: key is not UTF-8")))
}

/// The wall-clock time of a log entry.
pub(crate) fn log_millis(raw: &[u8]) -> Result<u64> {
    let mut r = Reader::new(raw, "log entry");
    r.u8()?;
    r.u64()
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Values are capped far below 4 GiB by the store's size limit.
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Corrupt(format!("truncated {}", self.what)));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn i64(&mut self) -> Result<i64> {
        let b = self.take(8)?;
        Ok(i64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let b = self.take(4)?;
        let n = u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize;
        self.take(n)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn end(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::Corrupt(format!("trailing bytes in {}", self.what)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, v: &str, c: i64, m: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::copy_from_slice(v.as_bytes()),
            create_revision: c,
            mod_revision: m,
        }
    }

    #[test]
    fn log_roundtrip() {
        let events = [
            Event::Put {
                kv: kv("/a", "one", 3, 3),
                prev: None,
            },
            Event::Put {
                kv: kv("/a", "two", 3, 5),
                prev: Some(kv("/a", "one", 3, 3)),
            },
            Event::Delete {
                prev: kv("/a", "two", 3, 5),
                revision: 7,
            },
        ];
        for e in events {
            let raw = encode_log(&e, 42);
            let (back, ms) = decode_log(e.revision(), &raw).unwrap();
            assert_eq!(back, e);
            assert_eq!(ms, 42);
            assert_eq!(log_key(e.revision(), &raw).unwrap(), "/a");
        }
    }

    #[test]
    fn truncated_inputs_are_corrupt_not_panics() {
        let raw = encode_log(
            &Event::Put {
                kv: kv("/k", "value", 1, 1),
                prev: Some(kv("/k", "old", 1, 1)),
            },
            1,
        );
        for n in 0..raw.len() {
            assert!(matches!(decode_log(1, &raw[..n]), Err(Error::Corrupt(_))));
        }
        assert!(matches!(
            decode_record("/k", &[1, 2, 3]),
            Err(Error::Corrupt(_))
        ));
        let rec = encode_record(1, 2, b"x");
        assert_eq!(decode_record("/k", &rec).unwrap(), kv("/k", "x", 1, 2));
    }
}
