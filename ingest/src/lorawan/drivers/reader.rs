//! Bounds-checked reading of payload bytes and bounded collection of
//! measurements, shared by every driver.
//!
//! Drivers never index the payload directly: every read goes through
//! [`Reader`], which turns a short frame into a [`DecodeError::Truncated`]
//! naming the field, its offset and the byte counts, and every measurement
//! goes through [`Out`], which enforces [`MAX_MEASUREMENTS`].

use super::{MAX_MEASUREMENTS, MAX_PAYLOAD_BYTES, Measurement};

/// Why a payload could not be decoded. Offsets are zero-based byte positions
/// in the application payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload has no bytes at all.
    #[error("{driver}: the payload is empty")]
    Empty {
        /// Driver that refused the payload.
        driver: &'static str,
    },
    /// The payload is longer than any LoRaWAN frame can carry.
    #[error("{driver}: the payload is {len} bytes, more than the {max}-byte limit")]
    TooLong {
        /// Driver that refused the payload.
        driver: &'static str,
        /// Payload length.
        len: usize,
        /// Accepted maximum.
        max: usize,
    },
    /// The device does not send this driver's format on that port.
    #[error("{driver}: f_port {f_port} is not a data port of this device (expected {expected})")]
    UnsupportedPort {
        /// Driver that refused the payload.
        driver: &'static str,
        /// Port of the uplink.
        f_port: u8,
        /// Ports the driver decodes.
        expected: &'static str,
    },
    /// A field runs past the end of the payload.
    #[error(
        "{driver}: {field} at byte {offset} needs {expected} byte(s) but only {present} remain"
    )]
    Truncated {
        /// Driver that refused the payload.
        driver: &'static str,
        /// Field being read, with its type code where the format has one.
        field: &'static str,
        /// Offset where the field starts.
        offset: usize,
        /// Bytes the field needs.
        expected: usize,
        /// Bytes left in the payload from `offset`.
        present: usize,
    },
    /// A type (or sensor-kind) code the format does not define.
    #[error("{driver}: unknown {kind} 0x{code:02x} at byte {offset}")]
    UnknownType {
        /// Driver that refused the payload.
        driver: &'static str,
        /// What the code selects, e.g. "data type".
        kind: &'static str,
        /// The unknown code.
        code: u8,
        /// Offset of the code.
        offset: usize,
    },
    /// A channel id / channel type pair the format does not define.
    #[error(
        "{driver}: unknown channel 0x{channel:02x} with type 0x{channel_type:02x} at byte {offset}"
    )]
    UnknownChannel {
        /// Driver that refused the payload.
        driver: &'static str,
        /// Channel id byte.
        channel: u8,
        /// Channel type byte.
        channel_type: u8,
        /// Offset of the channel id.
        offset: usize,
    },
    /// The same data type appears twice on the same channel in one frame.
    #[error("{driver}: channel {channel} repeats data type 0x{data_type:02x} at byte {offset}")]
    DuplicateChannel {
        /// Driver that refused the payload.
        driver: &'static str,
        /// Repeated channel.
        channel: u8,
        /// Repeated data type.
        data_type: u8,
        /// Offset of the repeated entry.
        offset: usize,
    },
    /// The frame length does not match any layout of the format.
    #[error("{driver}: the frame is {len} bytes but {expected}")]
    BadLength {
        /// Driver that refused the payload.
        driver: &'static str,
        /// Frame length.
        len: usize,
        /// The lengths the format allows, in words.
        expected: &'static str,
    },
    /// The frame is well formed but of a kind this driver does not turn into
    /// measurements.
    #[error("{driver}: byte {offset}: {reason}")]
    Unsupported {
        /// Driver that refused the payload.
        driver: &'static str,
        /// Offset of the byte that selects the unsupported kind.
        offset: usize,
        /// What the frame is and why it is refused.
        reason: &'static str,
    },
    /// The frame would yield more measurements than allowed.
    #[error("{driver}: the frame yields more than {max} measurements")]
    TooManyMeasurements {
        /// Driver that refused the payload.
        driver: &'static str,
        /// Accepted maximum.
        max: usize,
    },
}

/// A cursor over a payload whose reads fail instead of panicking.
pub(crate) struct Reader<'a> {
    driver: &'static str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `bytes`, refusing empty and oversized payloads up front.
    pub(crate) fn new(driver: &'static str, bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Empty { driver });
        }
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(DecodeError::TooLong {
                driver,
                len: bytes.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        Ok(Self {
            driver,
            bytes,
            pos: 0,
        })
    }

    /// Offset of the next byte to read.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// Whether every byte has been read.
    pub(crate) fn is_done(&self) -> bool {
        self.remaining() == 0
    }

    /// Total payload length.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Reads the next `N` bytes as one field.
    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let slice = self.slice(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    /// Reads the next `n` bytes as one field.
    pub(crate) fn slice(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.bytes.get(self.pos..end)) {
            Some(slice) => {
                self.pos += n;
                Ok(slice)
            }
            None => Err(DecodeError::Truncated {
                driver: self.driver,
                field,
                offset: self.pos,
                expected: n,
                present: self.remaining(),
            }),
        }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let [b] = self.array::<1>(field)?;
        Ok(b)
    }

    pub(crate) fn u16_be(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_be_bytes)
    }

    pub(crate) fn i16_be(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        self.array(field).map(i16::from_be_bytes)
    }

    pub(crate) fn u32_be(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    pub(crate) fn i32_be(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    pub(crate) fn i16_le(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        self.array(field).map(i16::from_le_bytes)
    }
}

/// How a numeric value is stored on the wire (big-endian where multi-byte).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wire {
    U8,
    U16,
    I16,
    I24,
    U32,
    I32,
}

impl Reader<'_> {
    /// Reads one value stored as `wire` and converts it to `f64` exactly.
    pub(crate) fn value(&mut self, wire: Wire, field: &'static str) -> Result<f64, DecodeError> {
        Ok(match wire {
            Wire::U8 => f64::from(self.u8(field)?),
            Wire::U16 => f64::from(self.u16_be(field)?),
            Wire::I16 => f64::from(self.i16_be(field)?),
            Wire::I24 => {
                let [a, b, c] = self.array::<3>(field)?;
                f64::from(i24(u32::from_be_bytes([0, a, b, c])))
            }
            Wire::U32 => f64::from(self.u32_be(field)?),
            Wire::I32 => f64::from(self.i32_be(field)?),
        })
    }
}

/// Sign-extends a 24-bit two's-complement value held in the low bits of `raw`.
pub(crate) fn i24(raw: u32) -> i32 {
    // Shifting the 24 bits to the top and back lets the arithmetic shift copy
    // the sign bit; no value of `raw` can overflow this.
    ((raw << 8) as i32) >> 8
}

/// The measurements of one frame, capped at [`MAX_MEASUREMENTS`].
pub(crate) struct Out {
    driver: &'static str,
    items: Vec<Measurement>,
}

impl Out {
    pub(crate) fn new(driver: &'static str) -> Self {
        Self {
            driver,
            items: Vec::new(),
        }
    }

    /// Adds a measurement under exactly `name`.
    pub(crate) fn push(&mut self, name: impl Into<String>, value: f64) -> Result<(), DecodeError> {
        if self.items.len() >= MAX_MEASUREMENTS {
            return Err(DecodeError::TooManyMeasurements {
                driver: self.driver,
                max: MAX_MEASUREMENTS,
            });
        }
        self.items.push((name.into(), value));
        Ok(())
    }

    /// Adds a measurement; a name already used in this frame gets `_2`, `_3`,
    /// ... appended so that no reading silently replaces another.
    pub(crate) fn push_numbered(&mut self, name: &str, value: f64) -> Result<(), DecodeError> {
        if !self.contains(name) {
            return self.push(name, value);
        }
        let mut n = 2usize;
        loop {
            let candidate = format!("{name}_{n}");
            if !self.contains(&candidate) {
                return self.push(candidate, value);
            }
            // Bounded: the cap on items stops the frame long before `n` grows large.
            n = n.saturating_add(1);
        }
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.items.iter().any(|(existing, _)| existing == name)
    }

    pub(crate) fn finish(self) -> Vec<Measurement> {
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_read_names_field_offset_and_counts() {
        let mut r = Reader::new("t", &[1, 2, 3]).unwrap();
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(
            r.u32_be("wide field"),
            Err(DecodeError::Truncated {
                driver: "t",
                field: "wide field",
                offset: 1,
                expected: 4,
                present: 2
            })
        );
        // A failed read consumes nothing.
        assert_eq!(r.u16_be("b").unwrap(), 0x0203);
        assert!(r.is_done());
    }

    #[test]
    fn huge_slice_request_does_not_overflow() {
        let mut r = Reader::new("t", &[1]).unwrap();
        r.u8("a").unwrap();
        assert!(r.slice(usize::MAX, "b").is_err());
    }

    #[test]
    fn sign_extends_24_bits() {
        assert_eq!(i24(0x06765F), 423_519);
        assert_eq!(i24(0xF2960A), -879_094);
        assert_eq!(i24(0xFFFFFF), -1);
        assert_eq!(i24(0xFFFF_FFFF), -1);
    }

    #[test]
    fn numbered_names_never_collide() {
        let mut out = Out::new("t");
        out.push_numbered("x", 1.0).unwrap();
        out.push_numbered("x", 2.0).unwrap();
        out.push_numbered("x", 3.0).unwrap();
        let names: Vec<_> = out.finish().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["x", "x_2", "x_3"]);
    }

    #[test]
    fn output_is_capped() {
        let mut out = Out::new("t");
        for _ in 0..MAX_MEASUREMENTS {
            out.push("x", 0.0).unwrap();
        }
        assert_eq!(
            out.push("x", 0.0),
            Err(DecodeError::TooManyMeasurements {
                driver: "t",
                max: MAX_MEASUREMENTS
            })
        );
    }
}
