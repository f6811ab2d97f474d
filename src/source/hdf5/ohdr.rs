//! Raw data kept inside an object header: a compact dataset's data (layout message) and
//! attribute values (attribute messages), found by walking the header's messages ourselves
//! (format spec, "Data Object Headers", versions 1 and 2, with continuation blocks).
//!
//! libhdf5 exposes no way to get these bytes without converting them, and converting
//! variable-length strings follows their global heap references, which is what `heap.rs`
//! must check first. Hand-written for that reason (no crate parses HDF5 object headers);
//! every size read is bounded, and anything unexpected gives `None` or an error, never a
//! guess. Attributes in dense storage (a fractal heap, for many or large attributes) are
//! not found here.

use super::heap::{FileLayout, ReadAt};
use crate::error::Error;

/// Why an object header could not be walked.
#[derive(Debug, thiserror::Error)]
pub enum ObjectHeaderError {
    #[error("object header version {0} unknown")]
    UnknownVersion(u8),
    #[error("object header version 2 expected after OHDR")]
    NotVersion2,
    #[error("object header continuations over arrfs's bound")]
    TooManyContinuations,
    #[error("continuation block without its signature")]
    ContinuationSignature,
    #[error("header address out of range")]
    AddressOutOfRange,
    #[error("object header cannot be read: {0}")]
    Unreadable(Error),
    #[error("header prefix cut short")]
    PrefixCutShort,
    #[error("first header chunk of {0} bytes (damaged)")]
    FirstChunkSize(u64),
    #[error("header message past its block")]
    MessagePastBlock,
}

/// Header blocks (the first and its continuations) walked at most.
const MAX_BLOCKS: usize = 1024;
/// Bytes of one header block read at most (libhdf5 keeps them far smaller).
const MAX_BLOCK_BYTES: u64 = 16 << 20;
/// Message types this module reads.
const LAYOUT: u16 = 0x0008;
const ATTRIBUTE: u16 = 0x000C;
const CONTINUATION: u16 = 0x0010;

/// The messages of one object header: (type, data).
pub struct Messages(Vec<(u16, Vec<u8>)>);

impl Messages {
    /// Reads the header at address `addr` (relative to `layout.base`) and its continuations.
    pub fn read(
        read_at: ReadAt,
        addr: u64,
        layout: FileLayout,
    ) -> Result<Messages, ObjectHeaderError> {
        let mut messages = Vec::new();
        let first = read_block(read_at, addr, layout, 16)?;
        let (version2, mut pending) = if first.starts_with(b"OHDR") {
            // The longest prefix: signature, version, flags, times, attribute limits, size.
            let prefix = read_block(read_at, addr, layout, 6 + 16 + 4 + 8)?;
            let (start, end, order) = v2_prefix(&prefix)?;
            let block = read_block(read_at, addr, layout, end as u64 + 4)?;
            walk_v2(&block[start..end], order, &mut messages)?;
            (Some(order), take_continuations(&mut messages, layout))
        } else {
            if first[0] != 1 {
                return Err(ObjectHeaderError::UnknownVersion(first[0]));
            }
            let size = u64::from(u32::from_le_bytes(first[8..12].try_into().unwrap()));
            let block = read_block(read_at, addr, layout, 16 + size.min(MAX_BLOCK_BYTES))?;
            walk_v1(&block[16..], &mut messages)?;
            (None, take_continuations(&mut messages, layout))
        };
        let mut blocks = 1;
        while let Some((at, length)) = pending.pop() {
            blocks += 1;
            if blocks > MAX_BLOCKS || length > MAX_BLOCK_BYTES {
                return Err(ObjectHeaderError::TooManyContinuations);
            }
            let block = read_block(read_at, at, layout, length)?;
            let mut found = Vec::new();
            match version2 {
                Some(order) => {
                    if !block.starts_with(b"OCHK") || block.len() < 8 {
                        return Err(ObjectHeaderError::ContinuationSignature);
                    }
                    walk_v2(&block[4..block.len() - 4], order, &mut found)?;
                }
                None => walk_v1(&block, &mut found)?,
            }
            pending.extend(take_continuations(&mut found, layout));
            messages.extend(found);
        }
        Ok(Messages(messages))
    }

    /// The data of a compact dataset (layout message version 3 or 4, class compact).
    pub fn compact_data(&self) -> Option<&[u8]> {
        let (_, data) = self.0.iter().find(|(t, _)| *t == LAYOUT)?;
        if !matches!(data.first(), Some(3 | 4)) || data.get(1) != Some(&0) {
            return None;
        }
        let size = usize::from(u16::from_le_bytes(data.get(2..4)?.try_into().ok()?));
        data.get(4..4 + size)
    }

    /// The stored value of attribute `name` (its bytes after name, datatype and dataspace).
    pub fn attribute_data(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .filter(|(t, _)| *t == ATTRIBUTE)
            .find_map(|(_, data)| attribute_value(data, name))
    }
}

/// One message of a version 1 object header: its data is `HeaderV1::data`.
pub struct Message {
    pub kind: u16,
    pub flags: u8,
    at: usize,
    len: usize,
}

/// A version 1 object header read strictly: every block consumed exactly, every message
/// 8-byte aligned, as many messages (continuations and null messages included) as its
/// prefix declares. Anything else, including a version 2 header, gives None: the caller
/// then asks libhdf5, which decides.
pub struct HeaderV1 {
    /// How many hard links point at the object.
    pub refcount: u32,
    /// Its messages, continuation messages left out.
    pub messages: Vec<Message>,
    /// Its blocks as read, one after the other (one allocation for all); messages point
    /// into them.
    bytes: Vec<u8>,
}

impl HeaderV1 {
    pub fn read(read_at: ReadAt, addr: u64, layout: FileLayout) -> Option<HeaderV1> {
        let mut prefix = [0u8; 16];
        read_at(addr.checked_add(layout.base)?, &mut prefix).ok()?;
        if prefix[0] != 1 || prefix[1] != 0 {
            return None;
        }
        let declared = usize::from(u16::from_le_bytes([prefix[2], prefix[3]]));
        let refcount = u32::from_le_bytes(prefix[4..8].try_into().ok()?);
        let size = u64::from(u32::from_le_bytes(prefix[8..12].try_into().ok()?));
        if size > MAX_BLOCK_BYTES {
            return None;
        }
        let mut header = HeaderV1 {
            refcount,
            messages: Vec::with_capacity(declared.min(64)),
            bytes: Vec::new(),
        };
        let mut walked = header.read_block(read_at, addr.checked_add(16)?, layout, size)?;
        let mut pending = header.take_continuations(layout);
        let mut blocks = 1;
        while let Some((at, length)) = pending.pop() {
            blocks += 1;
            if blocks > MAX_BLOCKS || length > MAX_BLOCK_BYTES || walked > declared {
                return None;
            }
            walked += header.read_block(read_at, at, layout, length)?;
            pending.extend(header.take_continuations(layout));
        }
        (walked == declared).then_some(header)
    }

    /// Reads the block of `length` bytes at `addr` and adds its messages; returns how many.
    fn read_block(
        &mut self,
        read_at: ReadAt,
        addr: u64,
        layout: FileLayout,
        length: u64,
    ) -> Option<usize> {
        let from = self.bytes.len();
        self.bytes.resize(from + usize::try_from(length).ok()?, 0);
        read_at(addr.checked_add(layout.base)?, &mut self.bytes[from..]).ok()?;
        self.walk(from)
    }

    /// The data of message `m`.
    pub fn data(&self, m: &Message) -> &[u8] {
        &self.bytes[m.at..m.at + m.len]
    }

    /// Adds the version 1 messages of the block that starts at `from` in `bytes` (the last
    /// one), which they must fill exactly; returns how many.
    fn walk(&mut self, from: usize) -> Option<usize> {
        let mut count = 0;
        let mut at = from;
        while at < self.bytes.len() {
            let head = self.bytes.get(at..at + 8)?;
            let kind = u16::from_le_bytes([head[0], head[1]]);
            let len = usize::from(u16::from_le_bytes([head[2], head[3]]));
            let flags = head[4];
            if len % 8 != 0 || self.bytes.len() - (at + 8) < len {
                return None;
            }
            self.messages.push(Message {
                kind,
                flags,
                at: at + 8,
                len,
            });
            at += 8 + len;
            count += 1;
        }
        Some(count)
    }

    /// Removes the continuation messages; returns (address, length) of each. One too
    /// short to hold its address and length is kept, for the caller to refuse as a message
    /// it does not know.
    fn take_continuations(&mut self, layout: FileLayout) -> Vec<(u64, u64)> {
        let (a, s) = (layout.sizeof_addr, layout.sizeof_size);
        let mut found = Vec::new();
        let bytes = &self.bytes;
        self.messages.retain(|m| {
            if m.kind != CONTINUATION || m.len < a + s {
                return true;
            }
            let data = &bytes[m.at..m.at + m.len];
            found.push((le(&data[..a]), le(&data[a..a + s])));
            false
        });
        found
    }
}

/// The value bytes of attribute message `data` if it is attribute `name`.
fn attribute_value<'a>(data: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let field = |at: usize| -> Option<usize> {
        Some(usize::from(u16::from_le_bytes(
            data.get(at..at + 2)?.try_into().ok()?,
        )))
    };
    let (name_len, type_len, space_len) = (field(2)?, field(4)?, field(6)?);
    // Version 1 pads each part to 8 bytes; version 3 adds the name's encoding byte.
    let (start, pad) = match data.first()? {
        1 => (8, 8),
        2 => (8, 1),
        3 => (9, 1),
        _ => return None,
    };
    let padded = |n: usize| n.next_multiple_of(pad);
    let stored_name = data.get(start..start + name_len)?;
    let stored_name = stored_name.strip_suffix(&[0]).unwrap_or(stored_name);
    if stored_name != name.as_bytes() {
        return None;
    }
    let value_at = start + padded(name_len) + padded(type_len) + padded(space_len);
    data.get(value_at..)
}

/// Reads `length` bytes of a header block at `addr`.
fn read_block(
    read_at: ReadAt,
    addr: u64,
    layout: FileLayout,
    length: u64,
) -> Result<Vec<u8>, ObjectHeaderError> {
    let at = addr
        .checked_add(layout.base)
        .ok_or(ObjectHeaderError::AddressOutOfRange)?;
    let mut block = vec![0u8; length.min(MAX_BLOCK_BYTES) as usize];
    read_at(at, &mut block).map_err(ObjectHeaderError::Unreadable)?;
    Ok(block)
}

/// A version 2 header's prefix: where its messages start and end in the block, and whether
/// messages carry a creation order.
fn v2_prefix(block: &[u8]) -> Result<(usize, usize, bool), ObjectHeaderError> {
    if block.get(4) != Some(&2) {
        return Err(ObjectHeaderError::NotVersion2);
    }
    let flags = block[5];
    let mut p = 6;
    if flags & 0x20 != 0 {
        p += 16;
    }
    if flags & 0x10 != 0 {
        p += 4;
    }
    let width = 1usize << (flags & 3);
    let size = le(block
        .get(p..p + width)
        .ok_or(ObjectHeaderError::PrefixCutShort)?);
    p += width;
    if size > MAX_BLOCK_BYTES {
        return Err(ObjectHeaderError::FirstChunkSize(size));
    }
    Ok((p, p + size as usize, flags & 0x04 != 0))
}

/// Version 1 messages: type (2), size (2), flags (1), reserved (3), data.
fn walk_v1(mut block: &[u8], out: &mut Vec<(u16, Vec<u8>)>) -> Result<(), ObjectHeaderError> {
    while block.len() >= 8 {
        let kind = u16::from_le_bytes([block[0], block[1]]);
        let size = usize::from(u16::from_le_bytes([block[2], block[3]]));
        let data = block
            .get(8..8 + size)
            .ok_or(ObjectHeaderError::MessagePastBlock)?;
        out.push((kind, data.to_vec()));
        block = &block[8 + size..];
    }
    Ok(())
}

/// Version 2 messages: type (1), size (2), flags (1), [creation order (2)], data.
fn walk_v2(
    mut block: &[u8],
    order: bool,
    out: &mut Vec<(u16, Vec<u8>)>,
) -> Result<(), ObjectHeaderError> {
    let head = if order { 6 } else { 4 };
    while block.len() >= head {
        let kind = u16::from(block[0]);
        let size = usize::from(u16::from_le_bytes([block[1], block[2]]));
        let data = block
            .get(head..head + size)
            .ok_or(ObjectHeaderError::MessagePastBlock)?;
        out.push((kind, data.to_vec()));
        block = &block[head + size..];
    }
    Ok(())
}

/// Removes the continuation messages from `messages`; returns (address, length) of each.
fn take_continuations(messages: &mut Vec<(u16, Vec<u8>)>, layout: FileLayout) -> Vec<(u64, u64)> {
    let (a, s) = (layout.sizeof_addr, layout.sizeof_size);
    let mut found = Vec::new();
    messages.retain(|(kind, data)| {
        if *kind != CONTINUATION {
            return true;
        }
        if data.len() >= a + s {
            found.push((le(&data[..a]), le(&data[a..a + s])));
        }
        false
    });
    found
}

/// A little-endian unsigned integer of 1 to 8 bytes.
fn le(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(0, |n, &b| (n << 8) | u64::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_attribute_parts_are_padded_to_8_bytes() {
        let mut msg = vec![1, 0, 4, 0, 3, 0, 2, 0];
        msg.extend(b"abc\0\0\0\0\0");
        msg.extend([9; 8]); // datatype (3 bytes, padded)
        msg.extend([8; 8]); // dataspace (2 bytes, padded)
        msg.extend([7, 7]);
        assert_eq!(attribute_value(&msg, "abc"), Some(&[7, 7][..]));
        assert_eq!(attribute_value(&msg, "ab"), None);
    }

    #[test]
    fn version_3_attributes_are_not_padded() {
        let mut msg = vec![3, 0, 2, 0, 1, 0, 1, 0, 0];
        msg.extend(b"x\0");
        msg.extend([9, 8, 5, 6]);
        assert_eq!(attribute_value(&msg, "x"), Some(&[5, 6][..]));
    }

    /// A version 1 message: type, size, flags, then `data` (a multiple of 8 bytes).
    fn v1_message(kind: u16, flags: u8, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_le_bytes().to_vec();
        out.extend((data.len() as u16).to_le_bytes());
        out.extend([flags, 0, 0, 0]);
        out.extend(data);
        out
    }

    #[test]
    fn a_version_1_header_is_read_across_its_continuation() {
        // At 100 (after a user block of 4): two messages, the second a continuation to a
        // block of 24 bytes at 300 holding a third.
        let mut continuation = 300u64.to_le_bytes().to_vec();
        continuation.extend(24u64.to_le_bytes());
        let mut first = v1_message(0x01, 0, &[7; 8]);
        first.extend(v1_message(CONTINUATION, 0, &continuation));
        let mut file = vec![0u8; 400];
        let mut prefix = vec![1, 0, 3, 0, 1, 0, 0, 0];
        prefix.extend((first.len() as u32).to_le_bytes());
        prefix.extend([0; 4]);
        file[104..120].copy_from_slice(&prefix);
        file[120..120 + first.len()].copy_from_slice(&first);
        file[304..328].copy_from_slice(&v1_message(0x03, 2, &[9; 16]));
        let read_at = |offset: u64, buf: &mut [u8]| {
            let at = offset as usize;
            buf.copy_from_slice(file.get(at..at + buf.len()).ok_or(Error::NotFound)?);
            Ok(())
        };
        let layout = FileLayout {
            base: 4,
            sizeof_addr: 8,
            sizeof_size: 8,
        };
        let header = HeaderV1::read(&read_at, 100, layout).unwrap();
        let found: Vec<_> = header
            .messages
            .iter()
            .map(|m| (m.kind, m.flags, header.data(m).to_vec()))
            .collect();
        assert_eq!(found, [(0x01, 0, vec![7; 8]), (0x03, 2, vec![9; 16])]);
        // A block that its messages do not fill exactly is refused.
        file[304..306].copy_from_slice(&0x04u16.to_le_bytes());
        file[306..308].copy_from_slice(&24u16.to_le_bytes());
        let read_at = |offset: u64, buf: &mut [u8]| {
            let at = offset as usize;
            buf.copy_from_slice(&file[at..at + buf.len()]);
            Ok(())
        };
        assert!(HeaderV1::read(&read_at, 100, layout).is_none());
    }

    #[test]
    fn a_message_past_its_block_is_an_error_not_a_read_past() {
        let block = [1, 0, 200, 0, 0, 0, 0, 0, 1, 2];
        assert!(walk_v1(&block, &mut Vec::new()).is_err());
    }
}
