//! Avro binary primitives: zig-zag varints, strings, doubles, booleans.

use super::DecodeError;

/// A cursor over an Avro datum that checks every read against the end of the buffer.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            left => Err(DecodeError::TrailingBytes(left)),
        }
    }

    pub fn long(&mut self) -> Result<i64, DecodeError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or(DecodeError::Truncated(self.pos))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(DecodeError::VarintOverflow(start))
    }

    /// An index (enum symbol or union branch) below `count`.
    pub fn index(&mut self, name: &'static str, count: usize) -> Result<u32, DecodeError> {
        let index = self.long()?;
        if (0..count as i64).contains(&index) {
            Ok(index as u32)
        } else {
            Err(DecodeError::BadIndex { name, index })
        }
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        let len = self.long()?;
        if len < 0 {
            return Err(DecodeError::NegativeLength { len, at });
        }
        let end = self
            .pos
            .checked_add(len as usize)
            .filter(|&end| end <= self.buf.len())
            .ok_or(DecodeError::Truncated(self.buf.len()))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn string(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        std::str::from_utf8(self.bytes()?).map_err(|_| DecodeError::InvalidUtf8(at))
    }

    pub fn double(&mut self) -> Result<f64, DecodeError> {
        let end = self.pos + 8;
        let raw = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated(self.buf.len()))?;
        self.pos = end;
        Ok(f64::from_le_bytes(raw.try_into().expect("slice of 8")))
    }

    pub fn boolean(&mut self) -> Result<bool, DecodeError> {
        let byte = *self
            .buf
            .get(self.pos)
            .ok_or(DecodeError::Truncated(self.pos))?;
        self.pos += 1;
        match byte {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::BadBool(other)),
        }
    }
}

pub fn write_long(value: i64, out: &mut Vec<u8>) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub fn write_string(value: &str, out: &mut Vec<u8>) {
    write_long(value.len() as i64, out);
    out.extend_from_slice(value.as_bytes());
}

pub fn write_double(value: f64, out: &mut Vec<u8>) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn write_bool(value: bool, out: &mut Vec<u8>) {
    out.push(u8::from(value));
}
