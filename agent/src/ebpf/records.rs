//! Ring-buffer records: bytes from the kernel copied into aligned `agent-common` structs.

use std::mem::size_of;

use agent_common::{CgroupRecord, MemMarkRecord, OomRecord, RecordHeader, kind};

/// One parsed ring-buffer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The OOM killer chose a victim.
    Oom(OomRecord),
    /// A memcg or the node crossed a mark.
    MemMark(MemMarkRecord),
    /// A cgroup was created.
    CgroupMkdir(Box<CgroupRecord>),
    /// A cgroup was removed.
    CgroupRmdir(Box<CgroupRecord>),
}

/// Why a record could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than its header or than its kind's struct.
    #[error("record of kind {kind} is {len} bytes, expected {want}")]
    Short {
        /// Kind from the header (0 if the header itself was short).
        kind: u32,
        /// Bytes received.
        len: usize,
        /// Bytes needed.
        want: usize,
    },
    /// Unknown kind (object and agent out of step).
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

/// Copies `T` out of `bytes` (ring-buffer memory need not be aligned for `T`).
fn read<T: aya::Pod>(bytes: &[u8], kind: u32) -> Result<T, RecordError> {
    if bytes.len() < size_of::<T>() {
        return Err(RecordError::Short {
            kind,
            len: bytes.len(),
            want: size_of::<T>(),
        });
    }
    // SAFETY: the length is checked above, `T: Pod` accepts every bit pattern, and
    // read_unaligned makes no alignment assumption.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

impl Record {
    /// Parses one record.
    pub fn parse(bytes: &[u8]) -> Result<Self, RecordError> {
        let hdr: RecordHeader = read(bytes, 0)?;
        Ok(match hdr.kind {
            kind::OOM => Record::Oom(read(bytes, hdr.kind)?),
            kind::MEM_MARK => Record::MemMark(read(bytes, hdr.kind)?),
            kind::CGROUP_MKDIR => Record::CgroupMkdir(Box::new(read(bytes, hdr.kind)?)),
            kind::CGROUP_RMDIR => Record::CgroupRmdir(Box::new(read(bytes, hdr.kind)?)),
            other => return Err(RecordError::UnknownKind(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: aya::Pod>(v: &T) -> Vec<u8> {
        // SAFETY: T is Pod (no padding, plain integers): its bytes are initialised.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn oom_record_round_trips_even_unaligned() {
        let mut r = OomRecord::default();
        r.hdr.kind = kind::OOM;
        r.pid = 42;
        r.comm[..4].copy_from_slice(b"hog\0");
        let mut buf = vec![0u8];
        buf.extend(bytes_of(&r));
        match Record::parse(&buf[1..]) {
            Ok(Record::Oom(got)) => {
                assert_eq!(got.pid, 42);
                assert_eq!(got.comm_bytes(), b"hog");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let mut r = OomRecord::default();
        r.hdr.kind = kind::OOM;
        let b = bytes_of(&r);
        assert!(matches!(
            Record::parse(&b[..20]),
            Err(RecordError::Short {
                kind: kind::OOM,
                ..
            })
        ));
        assert!(matches!(
            Record::parse(&b[..3]),
            Err(RecordError::Short { kind: 0, .. })
        ));
        let h = RecordHeader {
            kind: 99,
            ..RecordHeader::default()
        };
        assert_eq!(
            Record::parse(&bytes_of(&h)),
            Err(RecordError::UnknownKind(99))
        );
    }
}
