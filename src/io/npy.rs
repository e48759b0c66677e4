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
        if self.dtype == Dtype::Bool {
            return Err(Error::Format {
                path: path.to_path_buf(),
                what: "expected an integer array, found dtype |b1 (bool)".into(),
            });
        }
        let b = &self.bytes;
        Ok(match self.dtype {
            Dtype::U64 => b
                .chunks_exact(8)
                .enumerate()
                .map(|(k, c)| {
                    let v = u64::from_le_bytes(c.try_into().expect("chunk size"));
                    // Reported as read: clamped, a huge count would print as another number.
                    i64::try_from(v).map_err(|_| Error::Format {
                        path: path.to_path_buf(),
                        what: format!("expected values up to {}, found {v} at index {k}", i64::MAX),
                    })
                })
                .collect::<Result<_>>()?,
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
///
/// The header is read and checked first, and the data's size that it declares is compared
/// with the file's before any data are read: a truncated, padded or lying file (or a device
/// such as `/dev/zero`) costs no more than the header says. The data are then read into one
/// buffer of exactly their size, which the array keeps.
pub fn read(path: &Path) -> Result<NpyArray> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let size = file
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let read_err = |e: std::io::Error| Error::io(path, "read", e);
    // The fixed prefix (12 bytes cover every version's), then the header it announces.
    let mut head = Vec::new();
    (&mut file)
        .take(12)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    let (header_len, start) = header_span(path, &head)?;
    let want = (start + header_len) as u64;
    (&mut file)
        .take(want.saturating_sub(head.len() as u64))
        .read_to_end(&mut head)
        .map_err(read_err)?;
    let (shape, dtype, end, nbytes) = header(path, &head)?;
    // Bytes read past the header's end with the prefix (a short version-1 header).
    let mut data = head.split_off(end);
    let wrong_size = |found: String| size_error(path, nbytes, &shape, dtype, found);
    if let Some(size) = size {
        if size != (end + nbytes) as u64 {
            return Err(wrong_size(size.saturating_sub(end as u64).to_string()));
        }
    }
    // A file of the declared size takes one buffer of it; a stream (a pipe) grows its buffer
    // with what actually arrives, whatever its header declares.
    if size.is_some() {
        data.try_reserve_exact((nbytes + 1).saturating_sub(data.len()))
            .map_err(|_| Error::io(path, "read", std::io::ErrorKind::OutOfMemory.into()))?;
    }
    // One byte more than the data, to see a stream that goes on.
    (&mut file)
        .take((nbytes + 1 - data.len()) as u64)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    match data.len() {
        n if n == nbytes => Ok(NpyArray {
            shape,
            dtype,
            bytes: data,
        }),
        n if n > nbytes => Err(wrong_size("more".into())),
        n => Err(wrong_size(n.to_string())),
    }
}

/// Parse the bytes of a `.npy` file (`path` is only used in error messages).
pub fn parse(path: &Path, data: &[u8]) -> Result<NpyArray> {
    let (shape, dtype, start) = parse_header(path, data)?;
    Ok(NpyArray {
        shape,
        dtype,
        bytes: data[start..].to_vec(),
    })
}

/// The header's length and where it starts, from a `.npy` file's first bytes (at least 12
/// of them when the file has that many).
fn header_span(path: &Path, data: &[u8]) -> Result<(usize, usize)> {
    if data.starts_with(MAGIC) && data.len() < 10 {
        return Err(format_err(
            path,
            format!(
                "truncated .npy header: expected at least 10 bytes, found {}",
                data.len()
            ),
        ));
    }
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
                return Err(format_err(
                    path,
                    format!(
                        "truncated .npy header: expected at least 12 bytes, found {}",
                        data.len()
                    ),
                ));
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
    Ok((header_len, start))
}

/// The most dimensions an array may have: NumPy's own limit (`NPY_MAXDIMS`).
const MAX_DIMS: usize = 64;

/// The first `max` characters of `s`, and `…` when there were more.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The shape and dtype of the `.npy` file that `data` starts (it holds at least the whole
/// header), where its data start, and how many bytes of data the header declares.
fn header(path: &Path, data: &[u8]) -> Result<(Vec<usize>, Dtype, usize, usize)> {
    let (header_len, start) = header_span(path, data)?;
    let end = start + header_len;
    if data.len() < end {
        return Err(format_err(
            path,
            format!(
                "truncated .npy header: expected {header_len} header bytes after the first \
                 {start}, found a file of {} bytes",
                data.len()
            ),
        ));
    }
    let header = std::str::from_utf8(&data[start..end])
        .map_err(|_| format_err(path, "the .npy header is not valid text"))?;
    let header = Header::parse(header).map_err(|what| {
        // Clipped: a header may be 4 GB long (its length field is a u32), and a message of
        // a shape of rank 100,000 filled 300 KB of the terminal.
        format_err(
            path,
            format!(
                "cannot read the .npy header {:?}: {}",
                clip(header.trim_end(), 200),
                clip(&what, 300)
            ),
        )
    })?;
    let descr = header.descr.as_str();
    let dtype = Dtype::parse(descr).ok_or_else(|| {
        format_err(
            path,
            format!(
                "unsupported dtype {descr:?}: expected little-endian float32/float64, an integer type or bool"
            ),
        )
    })?;
    if header.fortran_order {
        return Err(format_err(
            path,
            "expected a C-ordered array (fortran_order False), found fortran_order True; save it with np.ascontiguousarray",
        ));
    }
    let shape = header.shape;
    if shape.len() > MAX_DIMS {
        return Err(format_err(
            path,
            format!(
                "expected at most {MAX_DIMS} dimensions (NumPy's limit), found {}",
                shape.len()
            ),
        ));
    }
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            format_err(
                path,
                format!("expected a shape whose element count fits in memory, found {shape:?}"),
            )
        })?;
    // With the header, at most what one allocation can hold (so no sum below overflows).
    let nbytes = count
        .checked_mul(dtype.size())
        .filter(|&n| n <= isize::MAX as usize - end)
        .ok_or_else(|| {
            format_err(
                path,
                format!("expected a shape whose size fits in memory, found {shape:?} {descr}"),
            )
        })?;
    Ok((shape, dtype, end, nbytes))
}

/// The shape and dtype of the `.npy` file `data`, and where its data start (checked to
/// hold exactly the bytes the shape needs).
fn parse_header(path: &Path, data: &[u8]) -> Result<(Vec<usize>, Dtype, usize)> {
    let (shape, dtype, end, nbytes) = header(path, data)?;
    let found = data.len() - end;
    if found != nbytes {
        return Err(size_error(path, nbytes, &shape, dtype, found.to_string()));
    }
    Ok((shape, dtype, end))
}

/// The data are not the `nbytes` that the header's shape and dtype need.
fn size_error(path: &Path, nbytes: usize, shape: &[usize], dtype: Dtype, found: String) -> Error {
    format_err(
        path,
        format!(
            "expected {nbytes} bytes of data for shape {shape:?} {}, found {found}",
            dtype.descr()
        ),
    )
}

/// The three fields of a `.npy` header, read from its Python dict literal the way NumPy's
/// reader takes it: exactly the keys `descr`, `fortran_order` and `shape`, each once.
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

impl Header {
    fn parse(text: &str) -> std::result::Result<Header, String> {
        let mut p = Literal {
            rest: text.trim_start(),
        };
        p.expect('{')?;
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        loop {
            if p.eat('}') {
                break;
            }
            let key = p.string()?;
            p.expect(':')?;
            let duplicate = match key.as_str() {
                "descr" => descr.replace(p.string()?).is_some(),
                "fortran_order" => fortran.replace(p.boolean()?).is_some(),
                "shape" => shape.replace(p.shape()?).is_some(),
                other => {
                    return Err(format!(
                        "unexpected key {other:?} (expected 'descr', 'fortran_order', 'shape')"
                    ))
                }
            };
            if duplicate {
                return Err(format!("the key {key:?} appears twice"));
            }
            if !p.eat(',') {
                p.expect('}')?;
                break;
            }
        }
        if !p.rest.trim().is_empty() {
            return Err(format!(
                "unexpected text after the dict: {:?}",
                p.rest.trim()
            ));
        }
        Ok(Header {
            descr: descr.ok_or("no 'descr' key")?,
            fortran_order: fortran.ok_or("no 'fortran_order' key")?,
            shape: shape.ok_or("no 'shape' key")?,
        })
    }
}

/// A cursor over the header's dict literal; every method skips the whitespace before its
/// token.
struct Literal<'a> {
    rest: &'a str,
}

impl Literal<'_> {
    fn eat(&mut self, c: char) -> bool {
        self.rest = self.rest.trim_start();
        match self.rest.strip_prefix(c) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected {c:?} at {:?}", self.head()))
        }
    }

    fn head(&self) -> String {
        self.rest.chars().take(16).collect()
    }

    /// A quoted string without escapes (dtype strings and keys have none).
    fn string(&mut self) -> std::result::Result<String, String> {
        self.rest = self.rest.trim_start();
        let quote = self
            .rest
            .chars()
            .next()
            .filter(|&q| q == '\'' || q == '"')
            .ok_or_else(|| format!("expected a quoted string at {:?}", self.head()))?;
        let body = &self.rest[1..];
        let close = body
            .find(quote)
            .ok_or_else(|| format!("unterminated string at {:?}", self.head()))?;
        let value = body[..close].to_string();
        if value.contains('\\') {
            return Err(format!("unexpected escape in {value:?}"));
        }
        self.rest = &body[close + 1..];
        Ok(value)
    }

    fn boolean(&mut self) -> std::result::Result<bool, String> {
        self.rest = self.rest.trim_start();
        for (word, value) in [("True", true), ("False", false)] {
            if let Some(r) = self.rest.strip_prefix(word) {
                self.rest = r;
                return Ok(value);
            }
        }
        Err(format!("expected True or False at {:?}", self.head()))
    }

    /// A tuple of non-negative integers: `()`, `(3,)`, `(3, 4)`, `(3, 4,)`. (`(3)` is the
    /// integer 3 in Python, not a tuple.)
    fn shape(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect('(')?;
        let mut dims = Vec::new();
        let mut trailing_comma = false;
        while !self.eat(')') {
            self.rest = self.rest.trim_start();
            let digits = self.rest.len()
                - self
                    .rest
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .len();
            let dim = self.rest[..digits].parse::<usize>().map_err(|_| {
                if digits > 0 {
                    format!(
                        "expected a dimension up to {}, found {}",
                        usize::MAX,
                        &self.rest[..digits]
                    )
                } else {
                    format!("expected a dimension at {:?}", self.head())
                }
            })?;
            // Python 2's long literals (`3L`), which old NumPy wrote.
            self.rest = &self.rest[digits..];
            self.rest = self.rest.strip_prefix('L').unwrap_or(self.rest);
            dims.push(dim);
            trailing_comma = self.eat(',');
            if !trailing_comma {
                self.expect(')')?;
                break;
            }
        }
        if dims.len() == 1 && !trailing_comma {
            return Err(format!(
                "the shape ({}) is an integer, not a tuple",
                dims[0]
            ));
        }
        Ok(dims)
    }
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

/// Serialise an array to `.npy` bytes (format 1.0). An error when `data` does not hold
/// the shape's number of values.
pub fn to_bytes<T: NpyElement>(shape: &[usize], data: &[T]) -> Result<Vec<u8>> {
    check_write_shape(Path::new("<memory>"), shape, data.len())?;
    let raw: &[u8] = bytemuck::cast_slice(data);
    let mut out = header_bytes(shape, T::DTYPE, raw.len());
    out.extend_from_slice(raw);
    Ok(out)
}

/// The number of values `shape` needs is `values`, and its header fits a version-1 file.
fn check_write_shape(path: &Path, shape: &[usize], values: usize) -> Result<()> {
    let want = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if want != Some(values) {
        return Err(Error::shape(
            format!("array for {}", path.display()),
            format!(
                "{shape:?} ({} values)",
                shape.iter().map(|&d| d as u128).product::<u128>()
            ),
            format!("{values} values"),
        ));
    }
    // NumPy reads no more (and the version-1 header's length, a u16, holds them all).
    if shape.len() > MAX_DIMS {
        return Err(Error::value(
            format!("array for {}", path.display()),
            format!(
                "expected at most {MAX_DIMS} dimensions (NumPy's limit), found {}",
                shape.len()
            ),
        ));
    }
    Ok(())
}

/// A version-1 `.npy` header for `shape` and `dtype`, with room reserved for `data` more
/// bytes.
fn header_bytes(shape: &[usize], dtype: Dtype, data: usize) -> Vec<u8> {
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
    let mut out = Vec::with_capacity(10 + header.len() + data);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// Write an array to a `.npy` file: the header, then the data as they are in memory (no
/// copy of the array is made).
pub fn write<T: NpyElement>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    check_write_shape(path, shape, data.len())?;
    write_parts(path, shape, T::DTYPE, bytemuck::cast_slice(data))
}

/// Write booleans as a NumPy `bool` array.
pub fn write_bool(path: &Path, shape: &[usize], data: &[bool]) -> Result<()> {
    check_write_shape(path, shape, data.len())?;
    let raw: Vec<u8> = data.iter().map(|&b| b as u8).collect();
    write_parts(path, shape, Dtype::Bool, &raw)
}

fn write_parts(path: &Path, shape: &[usize], dtype: Dtype, raw: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, "create", e))?;
    f.write_all(&header_bytes(shape, dtype, 0))
        .and_then(|()| f.write_all(raw))
        .map_err(|e| Error::io(path, "write", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file whose size is not what its header declares is refused from its metadata,
    /// before any data are read (here a sparse gigabyte; a reader that read first would take
    /// seconds and a gigabyte of memory); a stream is read no further than the header says.
    #[test]
    fn the_declared_size_is_checked_before_the_data_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.npy");
        write(&path, &[2, 3], &[0.0f32; 6]).unwrap();
        let exact = std::fs::metadata(&path).unwrap().len();
        assert_eq!(read(&path).unwrap().shape, vec![2, 3]);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(1 << 30).unwrap();
        let t0 = std::time::Instant::now();
        let e = read(&path).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "expected 24 bytes of data for shape [2, 3] <f4, found {}",
                (1u64 << 30) - (exact - 24)
            )),
            "{e}"
        );
        assert!(t0.elapsed().as_secs() < 5, "the data were read");
        file.set_len(exact - 1).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("found 23"), "{e}");
        let e = read(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("not a .npy file"), "{e}");
    }

    #[test]
    fn round_trip_f32_and_bool() {
        let p = Path::new("x.npy");
        let bytes = to_bytes(&[2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
        assert_eq!((bytes.len() - 6.5f32.to_le_bytes().len() * 6) % 64, 0);
        let a = parse(p, &bytes).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.to_f32(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let mut raw = header_bytes(&[3], Dtype::Bool, 3);
        raw.extend_from_slice(&[1, 0, 1]);
        assert_eq!(parse(p, &raw).unwrap().to_f64(), vec![1.0, 0.0, 1.0]);
    }

    #[test]
    fn scalar_and_one_dim_shapes() {
        let shape = |t: &str| Literal { rest: t }.shape().ok();
        assert_eq!(shape("()"), Some(vec![]));
        assert_eq!(shape("(7,)"), Some(vec![7]));
        assert_eq!(shape("(2, 3, 4)"), Some(vec![2, 3, 4]));
        assert_eq!(shape("(2, x)"), None);
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
        let bytes = to_bytes(&[2], &[1.0f64, 2.0]).unwrap();
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
    fn reads_the_header_as_numpy_does() {
        let ok = |h: &str| Header::parse(h).map(|h| (h.descr, h.fortran_order, h.shape));
        assert_eq!(
            ok("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }  \n").unwrap(),
            ("<f4".into(), false, vec![3, 4])
        );
        // Key order, double quotes, no trailing comma, `()` and `(5,)`, Python 2 longs.
        assert_eq!(
            ok(r#"{"shape": (5,), "fortran_order": True, "descr": "<f8"}"#).unwrap(),
            ("<f8".into(), true, vec![5])
        );
        assert_eq!(
            ok("{'descr': '<i8', 'fortran_order': False, 'shape': ()}")
                .unwrap()
                .2,
            Vec::<usize>::new()
        );
        assert_eq!(
            ok("{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L)}")
                .unwrap()
                .2,
            vec![2, 3]
        );
        for (bad, says) in [
            // A key's name inside another value must not be read as the key.
            (
                r#"{'note': "'shape': (1, 12)", 'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)}"#,
                "unexpected key \"note\"",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3,, 4)}",
                "dimension",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3)}",
                "not a tuple",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-3,)}",
                "dimension",
            ),
            ("{'descr': '<f4', 'fortran_order': False}", "no 'shape'"),
            (
                "{'descr': '<f4', 'descr': '<f8', 'fortran_order': False, 'shape': (1,)}",
                "twice",
            ),
            (
                "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
                "True or False",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x",
                "after the dict",
            ),
            (
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
                "quoted",
            ),
        ] {
            let err = ok(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_header_that_lies_is_an_error_naming_it() {
        let p = Path::new("lie.npy");
        let header = r#"{'note': "'shape': (1, 12)", 'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"#;
        let mut lie = b"\x93NUMPY\x01\x00".to_vec();
        lie.extend_from_slice(&(header.len() as u16).to_le_bytes());
        lie.extend_from_slice(header.as_bytes());
        lie.extend_from_slice(&[0u8; 48]);
        let err = parse(p, &lie).unwrap_err().to_string();
        assert!(
            err.contains("lie.npy") && err.contains("unexpected key"),
            "{err}"
        );
    }

    #[test]
    fn rejects_truncated_data() {
        let p = Path::new("t.npy");
        let bytes = to_bytes(&[4], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let err = parse(p, &bytes[..bytes.len() - 3]).unwrap_err().to_string();
        assert!(err.contains("expected 16 bytes"), "{err}");
        assert!(parse(p, b"hello").is_err());
        // A header cut short says how long it should be and how long the file is.
        let err = parse(p, &bytes[..20]).unwrap_err().to_string();
        assert!(
            err.contains("truncated .npy header: expected")
                && err.contains("found a file of 20 bytes"),
            "{err}"
        );
        // The magic string and nothing after it: cut short, not "no magic string".
        let err = parse(p, &bytes[..6]).unwrap_err().to_string();
        assert!(err.contains("expected at least 10 bytes, found 6"), "{err}");
        // Read from a file (the buffer kept, its header moved out): the same array.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.npy");
        std::fs::write(&file, &bytes).unwrap();
        let read_back = read(&file).unwrap();
        assert_eq!(read_back.shape, [4]);
        assert_eq!(read_back.to_f32(), [1.0, 2.0, 3.0, 4.0]);
    }

    fn with_header(header: &str, body: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn shapes_past_memory_and_lengths_past_i64_are_named() {
        let p = Path::new("big.npy");
        let huge = with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }",
            &[],
        );
        let err = parse(p, &huge).unwrap_err().to_string();
        assert!(
            err.contains("found [1099511627776, 1099511627776]"),
            "{err}"
        );
        let digits = with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (123456789012345678901,), }",
            &[],
        );
        let err = parse(p, &digits).unwrap_err().to_string();
        assert!(err.contains("found 123456789012345678901"), "{err}");
        // A byte count that fits a usize but not, with the header, one allocation.
        let bytes = with_header(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (18446744073709551615,), }",
            &[],
        );
        let err = parse(p, &bytes).unwrap_err().to_string();
        assert!(
            err.contains(
                "expected a shape whose size fits in memory, found [18446744073709551615]"
            ),
            "{err}"
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        let err = read(file.path()).unwrap_err().to_string();
        assert!(err.contains("fits in memory"), "{err}");
        // u64 lengths past i64: reported as read, not clamped.
        let u = with_header(
            "{'descr': '<u8', 'fortran_order': False, 'shape': (2,), }",
            &[[1u8, 0, 0, 0, 0, 0, 0, 0], [0xff; 8]].concat(),
        );
        let err = parse(p, &u).unwrap().to_i64(p).unwrap_err().to_string();
        assert!(
            err.contains("found 18446744073709551615 at index 1"),
            "{err}"
        );
        let b = with_header(
            "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }",
            &[1, 0],
        );
        let err = parse(p, &b).unwrap().to_i64(p).unwrap_err().to_string();
        assert!(err.contains("found dtype |b1 (bool)"), "{err}");
    }

    /// A shape that does not match the data is an error, and no file is made: a release
    /// build once wrote a header that disagreed with its data.
    #[test]
    fn a_shape_that_does_not_match_the_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let e = write(&path, &[2, 3], &[0.0f32; 5]).unwrap_err().to_string();
        assert!(
            e.contains("expected shape [2, 3] (6 values), found 5 values"),
            "{e}"
        );
        assert!(!path.exists());
        let e = write(&path, &[usize::MAX, 2], &[0.0f32; 2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("36893488147419103230 values"), "{e}");
        assert!(write_bool(&path, &[3], &[true; 2]).is_err());
        assert!(to_bytes(&[1, 2], &[0u8; 3]).is_err());
        assert!(write(&path, &vec![1; 3000], &[0u8]).is_err());
        assert!(!path.exists());
        write(&path, &[], &[7i64]).unwrap();
        assert_eq!(read(&path).unwrap().shape, Vec::<usize>::new());
    }

    /// Beyond NumPy's 64 dimensions an array is refused in one line, and a header that
    /// cannot be read is quoted clipped (a rank of 10,000 once filled the terminal).
    #[test]
    fn ranks_past_numpy_and_long_headers_are_short_errors() {
        let p = Path::new("rank.npy");
        let shape = vec!["1"; 65].join(", ");
        let file = with_header(
            &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape}), }}"),
            &[0; 4],
        );
        let e = parse(p, &file).unwrap_err().to_string();
        assert!(
            e.contains("expected at most 64 dimensions (NumPy's limit), found 65"),
            "{e}"
        );
        let shape = vec!["1"; 64].join(", ");
        let file = with_header(
            &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape}), }}"),
            &[0; 4],
        );
        assert_eq!(parse(p, &file).unwrap().shape, vec![1; 64]);
        let junk = format!("{{'descr': '<f4', 'shape': ({}x), }}", "1, ".repeat(10_000));
        let e = parse(p, &with_header(&junk, &[])).unwrap_err().to_string();
        assert!(e.len() < 800, "{} bytes: {}", e.len(), &e[..200]);
    }
}
