//! Reading and writing NumPy `.npy` files (format versions 1.0, 2.0 and 3.0).
//!
//! Only C-ordered, little-endian (or byte-sized) numeric arrays are accepted; anything else
//! is a [`Error::Format`] naming the file and the offending header field. Values are
//! converted on read to the element type the caller asks for, so the CLI accepts `f32` and
//! `f64` inputs alike.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Element types found in `.npy` files that this reader understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

impl Dtype {
    fn parse(descr: &str) -> Option<Dtype> {
        Some(match descr {
            "<f4" => Dtype::F32,
            "<f8" => Dtype::F64,
            "|i1" | "<i1" => Dtype::I8,
            "<i2" => Dtype::I16,
            "<i4" => Dtype::I32,
            "<i8" => Dtype::I64,
            "|u1" | "<u1" => Dtype::U8,
            "<u2" => Dtype::U16,
            "<u4" => Dtype::U32,
            "<u8" => Dtype::U64,
            "|b1" => Dtype::Bool,
            _ => return None,
        })
    }

    fn descr(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
            Dtype::I8 => "|i1",
            Dtype::I16 => "<i2",
            Dtype::I32 => "<i4",
            Dtype::I64 => "<i8",
            Dtype::U8 => "|u1",
            Dtype::U16 => "<u2",
            Dtype::U32 => "<u4",
            Dtype::U64 => "<u8",
            Dtype::Bool => "|b1",
        }
    }

    fn size(self) -> usize {
        match self {
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
            Dtype::I16 | Dtype::U16 => 2,
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64)
    }
}

/// An array read from a `.npy` file: its shape, its element type on disk, and the raw
/// little-endian bytes.
#[derive(Clone, Debug)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    bytes: Vec<u8>,
}

impl NpyArray {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All values converted to `f64` (integers exactly up to 2^53).
    pub fn to_f64(&self) -> Vec<f64> {
        let b = &self.bytes;
        macro_rules! conv {
            ($t:ty, $n:expr) => {
                b.chunks_exact($n)
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")) as f64)
                    .collect()
            };
        }
        match self.dtype {
            Dtype::F32 => conv!(f32, 4),
            Dtype::F64 => conv!(f64, 8),
            Dtype::I8 => b.iter().map(|&v| v as i8 as f64).collect(),
            Dtype::I16 => conv!(i16, 2),
            Dtype::I32 => conv!(i32, 4),
            Dtype::I64 => conv!(i64, 8),
            Dtype::U8 => b.iter().map(|&v| v as f64).collect(),
            Dtype::U16 => conv!(u16, 2),
            Dtype::U32 => conv!(u32, 4),
            Dtype::U64 => conv!(u64, 8),
            Dtype::Bool => b.iter().map(|&v| (v != 0) as u8 as f64).collect(),
        }
    }

    /// All values converted to `f32`, refusing finite values beyond its range (which would
    /// become infinities and be reported as such).
    pub fn to_f32_checked(&self, path: &Path) -> Result<Vec<f32>> {
        if self.dtype == Dtype::F32 {
            return Ok(self.to_f32());
        }
        let values = self.to_f64();
        if let Some((i, v)) = values
            .iter()
            .enumerate()
            .find(|(_, v)| v.is_finite() && v.abs() > f32::MAX as f64)
        {
            return Err(Error::Format {
                path: path.to_path_buf(),
                what: format!(
                    "element {i}: expected a value within f32's range (|v| ≤ {:e}), found {v:e}",
                    f32::MAX
                ),
            });
        }
        Ok(values.into_iter().map(|v| v as f32).collect())
    }

    /// All values converted to `f32`.
    pub fn to_f32(&self) -> Vec<f32> {
        if self.dtype == Dtype::F32 {
            return bytemuck::pod_collect_to_vec(&self.bytes);
        }
        self.to_f64().into_iter().map(|v| v as f32).collect()
    }

    /// Integer values as `i64`; floats are rejected so that lengths are never rounded.
    pub fn to_i64(&self, path: &Path) -> Result<Vec<i64>> {
        if self.dtype.is_float() {
            return Err(Error::Format {
                path: path.to_path_buf(),
                what: format!(
                    "expected an integer array, found dtype {}",
                    self.dtype.descr()
                ),
            });
        }
        let b = &self.bytes;
        Ok(match self.dtype {
            Dtype::U64 => b
                .chunks_exact(8)
                .map(|c| {
                    u64::from_le_bytes(c.try_into().expect("chunk size")).min(i64::MAX as u64)
                        as i64
                })
                .collect(),
            Dtype::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("chunk size")))
                .collect(),
            _ => self.to_f64().into_iter().map(|v| v as i64).collect(),
        })
    }
}

fn format_err(path: &Path, what: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Read a `.npy` file.
pub fn read(path: &Path) -> Result<NpyArray> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| Error::io(path, "read", e))?;
    parse(path, &data)
}

/// Parse the bytes of a `.npy` file (`path` is only used in error messages).
pub fn parse(path: &Path, data: &[u8]) -> Result<NpyArray> {
    if data.len() < 10 || &data[..6] != MAGIC {
        return Err(format_err(
            path,
            "not a .npy file: expected the magic string \\x93NUMPY at the start",
        ));
    }
    let major = data[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([data[8], data[9]]) as usize, 10),
        2 | 3 => {
            if data.len() < 12 {
                return Err(format_err(path, "truncated .npy header"));
            }
            (
                u32::from_le_bytes([data[8], data[9], data[10], data[11]]) as usize,
                12,
            )
        }
        v => {
            return Err(format_err(
                path,
                format!("unsupported .npy format version {v} (expected 1, 2 or 3)"),
            ))
        }
    };
    let end = start + header_len;
    if data.len() < end {
        return Err(format_err(path, "truncated .npy header"));
    }
    let header = std::str::from_utf8(&data[start..end])
        .map_err(|_| format_err(path, "the .npy header is not valid text"))?;
    let descr = header_field(header, "descr")
        .ok_or_else(|| format_err(path, "the .npy header has no 'descr' field"))?;
    let descr = descr.trim().trim_matches(|c| c == '\'' || c == '"');
    let dtype = Dtype::parse(descr).ok_or_else(|| {
        format_err(
            path,
            format!(
                "unsupported dtype {descr:?}: expected little-endian float32/float64, an integer type or bool"
            ),
        )
    })?;
    let fortran = header_field(header, "fortran_order")
        .ok_or_else(|| format_err(path, "the .npy header has no 'fortran_order' field"))?;
    if fortran.trim() != "False" {
        return Err(format_err(
            path,
            "expected a C-ordered array (fortran_order False), found fortran_order True; save it with np.ascontiguousarray",
        ));
    }
    let shape_text = header_field(header, "shape")
        .ok_or_else(|| format_err(path, "the .npy header has no 'shape' field"))?;
    let shape = parse_shape(shape_text).ok_or_else(|| {
        format_err(
            path,
            format!("cannot read the shape {shape_text:?} in the .npy header"),
        )
    })?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format_err(path, "array shape overflows"))?;
    let nbytes = count
        .checked_mul(dtype.size())
        .ok_or_else(|| format_err(path, "array size overflows"))?;
    let body = &data[end..];
    if body.len() != nbytes {
        return Err(format_err(
            path,
            format!(
                "expected {nbytes} bytes of data for shape {shape:?} {descr}, found {}",
                body.len()
            ),
        ));
    }
    Ok(NpyArray {
        shape,
        dtype,
        bytes: body.to_vec(),
    })
}

/// The text of a field's value in the header's Python dict literal.
fn header_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pos = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[pos + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    if rest.starts_with('(') {
        let close = rest.find(')')?;
        Some(&rest[..=close])
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(&rest[..end])
    }
}

fn parse_shape(text: &str) -> Option<Vec<usize>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse().ok())
        .collect()
}

/// Element types this crate writes.
pub trait NpyElement: bytemuck::Pod {
    const DTYPE: Dtype;
}
impl NpyElement for f32 {
    const DTYPE: Dtype = Dtype::F32;
}
impl NpyElement for f64 {
    const DTYPE: Dtype = Dtype::F64;
}
impl NpyElement for i32 {
    const DTYPE: Dtype = Dtype::I32;
}
impl NpyElement for i64 {
    const DTYPE: Dtype = Dtype::I64;
}
impl NpyElement for u8 {
    const DTYPE: Dtype = Dtype::U8;
}

/// Serialise an array to `.npy` bytes (format 1.0).
pub fn to_bytes<T: NpyElement>(shape: &[usize], data: &[T]) -> Vec<u8> {
    to_bytes_as(shape, bytemuck::cast_slice(data), T::DTYPE)
}

fn to_bytes_as(shape: &[usize], raw: &[u8], dtype: Dtype) -> Vec<u8> {
    let shape_text = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}",
        dtype.descr()
    );
    // Pad so that the data starts on a 64-byte boundary, newline-terminated.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + raw.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(raw);
    out
}

/// Write an array to a `.npy` file.
pub fn write<T: NpyElement>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    write_bytes(path, &to_bytes(shape, data))
}

/// Write booleans as a NumPy `bool` array.
pub fn write_bool(path: &Path, shape: &[usize], data: &[bool]) -> Result<()> {
    let raw: Vec<u8> = data.iter().map(|&b| b as u8).collect();
    write_bytes(path, &to_bytes_as(shape, &raw, Dtype::Bool))
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, "create", e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io(path, "write", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_f32_and_bool() {
        let p = Path::new("x.npy");
        let bytes = to_bytes(&[2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.5]);
        assert_eq!((bytes.len() - 6.5f32.to_le_bytes().len() * 6) % 64, 0);
        let a = parse(p, &bytes).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.to_f32(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        assert_eq!(
            a.to_f32_checked(Path::new("a.npy")).unwrap(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]
        );
        let raw = to_bytes_as(&[3], &[1, 0, 1], Dtype::Bool);
        assert_eq!(parse(p, &raw).unwrap().to_f64(), vec![1.0, 0.0, 1.0]);
        // f64 beyond f32's range is refused by name, not turned into an infinity.
        let wide = parse(p, &to_bytes(&[3], &[1.0f64, 1e300, f64::NAN])).unwrap();
        let err = wide.to_f32_checked(p).unwrap_err().to_string();
        assert!(
            err.contains("element 1: expected a value within f32's range"),
            "{err}"
        );
        assert!(err.contains("found 1e300"), "{err}");
        let fine = parse(p, &to_bytes(&[2], &[1.5f64, -2.0])).unwrap();
        assert_eq!(fine.to_f32_checked(p).unwrap(), vec![1.5, -2.0]);
    }

    #[test]
    fn scalar_and_one_dim_shapes() {
        assert_eq!(parse_shape("()"), Some(vec![]));
        assert_eq!(parse_shape("(7,)"), Some(vec![7]));
        assert_eq!(parse_shape("(2, 3, 4)"), Some(vec![2, 3, 4]));
        assert_eq!(parse_shape("(2, x)"), None);
    }

    /// Replace `from` by `to` (same length) in the header bytes.
    fn patch(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let at = bytes
            .windows(from.len())
            .position(|w| w == from)
            .expect("pattern in header");
        let mut out = bytes.to_vec();
        out[at..at + to.len()].copy_from_slice(to);
        out
    }

    #[test]
    fn rejects_fortran_order_and_big_endian() {
        let p = Path::new("bad.npy");
        let bytes = to_bytes(&[2], &[1.0f64, 2.0]);
        let err = parse(p, &patch(&bytes, b"False", b"True "))
            .unwrap_err()
            .to_string();
        assert!(err.contains("fortran_order"), "{err}");
        let err = parse(p, &patch(&bytes, b"<f8", b">f8"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported dtype"), "{err}");
    }

    #[test]
    fn rejects_truncated_data() {
        let p = Path::new("t.npy");
        let bytes = to_bytes(&[4], &[1.0f32, 2.0, 3.0, 4.0]);
        let err = parse(p, &bytes[..bytes.len() - 3]).unwrap_err().to_string();
        assert!(err.contains("expected 16 bytes"), "{err}");
        assert!(parse(p, b"hello").is_err());
    }
}
