//! An HTTP-FLV body, sans-IO: body bytes go in, in pieces of any size; the walker checks the
//! FLV header, walks the tags (FLV spec v10.1 annex E: an 11-byte tag header, the data, a
//! 4-byte previous-tag size) without copying their data, and counts the tags and the bytes
//! after the first video key frame, as the RTMP mode counts the bytes after its first key
//! frame: everything behind the key frame tag's data, its previous-tag size included.
//!
//! # Tricky parts
//! - **A key frame is known from the first data byte** of a video tag (frame type 1 in its
//!   high nibble, E.4.3.1): the tag's remaining data is counted from the byte after the tag.
//! - **Pieces split anywhere:** the header, tag headers and previous-tag sizes are collected
//!   byte by byte across pieces; tag data is skipped by length.
//! - **Bad input fails the player:** a missing `FLV` signature, a tag type other than audio
//!   (8), video (9) or script data (18), or a tag larger than [`MAX_TAG`].

/// Largest tag accepted: a 24-bit size field allows 16 MiB; real frames are far smaller.
pub const MAX_TAG: u32 = 16 * 1024 * 1024 - 1;

/// FLV header (9 bytes) and the first previous-tag size (4).
const HEADER: usize = 13;

/// Tag header length.
const TAG_HEADER: usize = 11;

/// Why the body is not FLV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlvError {
    /// The body does not start with an FLV header.
    #[error("no FLV header")]
    Header,
    /// A tag of an unknown type or size.
    #[error("bad FLV tag (type {0})")]
    Tag(u8),
}

impl FlvError {
    /// A short label failures are counted under.
    pub fn as_str(&self) -> &'static str {
        match self {
            FlvError::Header => "flv_bad_header",
            FlvError::Tag(_) => "flv_bad_tag",
        }
    }
}

/// Where the walker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `n` bytes of the file header seen.
    Header(usize),
    /// `n` bytes of a tag header seen.
    TagHeader(usize),
    /// The data's first byte is next (video tags: the frame type); `n` data bytes in all.
    TagFirst { video: bool, size: u32 },
    /// `left` data bytes left; `key`: the tag is a video key frame.
    TagData { left: u32, key: bool },
    /// `n` bytes of the previous-tag size seen.
    PreviousSize(usize),
}

/// Walks one FLV body.
#[derive(Debug)]
pub struct FlvWalker {
    state: State,
    /// The header or tag header being collected.
    head: [u8; HEADER],
    /// Whether the first video key frame was seen (counting is on).
    keyed: bool,
    /// Whole tags walked.
    pub tags: u64,
    /// Video key frames.
    pub keyframes: u64,
    /// Bytes after the first key frame's tag data.
    pub counted: u64,
}

impl Default for FlvWalker {
    fn default() -> Self {
        FlvWalker {
            state: State::Header(0),
            head: [0; HEADER],
            keyed: false,
            tags: 0,
            keyframes: 0,
            counted: 0,
        }
    }
}

impl FlvWalker {
    /// Whether the first video key frame was seen.
    pub fn keyed(&self) -> bool {
        self.keyed
    }

    /// Walks the next piece of the body.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), FlvError> {
        while !input.is_empty() {
            // What this step used: counted once a key frame was seen before it.
            let keyed = self.keyed;
            let before = input.len();
            self.step(&mut input)?;
            if keyed {
                self.counted += (before - input.len()) as u64;
            }
        }
        Ok(())
    }

    fn step(&mut self, input: &mut &[u8]) -> Result<(), FlvError> {
        match self.state {
            State::Header(n) => {
                let n = self.collect(input, n, HEADER);
                if n >= 3 && &self.head[..3] != b"FLV" {
                    return Err(FlvError::Header);
                }
                self.state = if n == HEADER {
                    State::TagHeader(0)
                } else {
                    State::Header(n)
                };
            }
            State::TagHeader(n) => {
                let n = self.collect(input, n, TAG_HEADER);
                self.state = if n == TAG_HEADER {
                    self.tag_header()?
                } else {
                    State::TagHeader(n)
                };
            }
            State::TagFirst { video, size } => {
                let first = input[0];
                *input = &input[1..];
                let key = video && first >> 4 == 1;
                self.keyframes += u64::from(key);
                self.state = State::TagData {
                    left: size - 1,
                    key,
                };
            }
            State::TagData { left: 0, key } => {
                self.keyed |= key;
                self.state = State::PreviousSize(0);
            }
            State::TagData { left, key } => {
                let n = input.len().min(left as usize);
                *input = &input[n..];
                self.state = State::TagData {
                    left: left - n as u32,
                    key,
                };
                if left == n as u32 {
                    // Counting starts behind the key frame's data.
                    self.keyed |= key;
                    self.state = State::PreviousSize(0);
                }
            }
            State::PreviousSize(have) => {
                let n = input.len().min(4 - have);
                *input = &input[n..];
                if have + n == 4 {
                    self.tags += 1;
                    self.state = State::TagHeader(0);
                } else {
                    self.state = State::PreviousSize(have + n);
                }
            }
        }
        Ok(())
    }

    /// Copies header bytes `have..want` from `input`; returns how many are there now.
    fn collect(&mut self, input: &mut &[u8], have: usize, want: usize) -> usize {
        let n = input.len().min(want - have);
        self.head[have..have + n].copy_from_slice(&input[..n]);
        *input = &input[n..];
        have + n
    }

    /// The state after a whole tag header.
    fn tag_header(&self) -> Result<State, FlvError> {
        // The filter bit and reserved bits are not used by live streams.
        let kind = self.head[0] & 0x1f;
        let size = u32::from_be_bytes([0, self.head[1], self.head[2], self.head[3]]);
        if !matches!(kind, 8 | 9 | 18) || size > MAX_TAG {
            return Err(FlvError::Tag(kind));
        }
        Ok(if size == 0 {
            State::TagData {
                left: 0,
                key: false,
            }
        } else {
            State::TagFirst {
                video: kind == 9,
                size,
            }
        })
    }
}

#[cfg(test)]
mod tests;
