//! NumPy's `.npy` files as scans write them (little-endian `f8` or `f4`, C order):
//! read for the landscape viewer, which draws `surface.npy` and its companions.

/// An array: its shape and its values in C order.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f64>,
}

/// Parses an `.npy` file of little-endian floats in C order; anything else is an
/// error saying what it found.
pub fn parse(b: &[u8]) -> Result<Array, String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not an .npy file".into());
    }
    let (len, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!(".npy version {v} is not supported")),
    };
    let header = b
        .get(start..start + len)
        .ok_or("the .npy header is cut short")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        Some(header[at..].trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = field("descr").ok_or("the .npy header has no descr")?;
    let width = if descr.starts_with("'<f8'") {
        8
    } else if descr.starts_with("'<f4'") {
        4
    } else {
        return Err(format!(
            "only little-endian floats are read, not {}",
            descr.split(',').next().unwrap_or(descr)
        ));
    };
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err("Fortran-ordered arrays are not read".into());
    }
    let shape_text = field("shape").ok_or("the .npy header has no shape")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("the .npy shape is not a tuple")?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad dimension {s:?}")))
        .collect::<Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let body = &b[start + len..];
    if body.len() != n * width {
        return Err(format!(
            "{} bytes of data for shape {shape:?} of {width}-byte floats",
            body.len()
        ));
    }
    let data = if width == 8 {
        body.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    } else {
        body.chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes"))))
            .collect()
    };
    Ok(Array { shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An .npy file as numpy.save writes one (version 1, header padded to 64 bytes).
    fn npy(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((h.len() as u16).to_le_bytes());
        out.extend(h.as_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn reads_what_numpy_writes() {
        let vals = [1.5f64, -2.0, f64::NAN, 4.25, 0.0, 1e-300];
        let body: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = parse(&npy("<f8", "(2, 3)", &body)).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data[..2], [1.5, -2.0]);
        assert!(a.data[2].is_nan());
        assert_eq!(a.data[5], 1e-300);
        let one = parse(&npy("<f4", "(2,)", &[0, 0, 192, 63, 0, 0, 0, 64])).unwrap();
        assert_eq!((one.shape, one.data), (vec![2], vec![1.5, 2.0]));
    }

    #[test]
    fn refuses_what_it_cannot_read_saying_what() {
        assert!(
            parse(b"PK\x03\x04 not npy")
                .unwrap_err()
                .contains("not an .npy")
        );
        let e = parse(&npy("<i8", "(1,)", &[0; 8])).unwrap_err();
        assert!(e.contains("'<i8'"), "{e}");
        let e = parse(&npy("<f8", "(3,)", &[0; 16])).unwrap_err();
        assert!(e.contains("16 bytes of data for shape [3]"), "{e}");
    }
}
