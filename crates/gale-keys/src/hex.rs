//! Lower-case hexadecimal: the one hex codec of the client side, for key ids,
//! fingerprints, test vectors, key file names (`%2A`) and gsub's JSON data values.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// The byte written as the two hex digits `hi` `lo` (either case); `None` if
/// either is not a hex digit.
pub fn byte(hi: u8, lo: u8) -> Option<u8> {
    let hi = (hi as char).to_digit(16)?;
    let lo = (lo as char).to_digit(16)?;
    Some((hi * 16 + lo) as u8)
}

/// Hex (either case, white space ignored) back to bytes; `None` if it is not hex.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() & 1 == 1 {
        return None;
    }
    digits.chunks(2).map(|p| byte(p[0], p[1])).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        assert_eq!(super::encode(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(super::decode("00AB 10"), Some(vec![0, 0xab, 0x10]));
        assert_eq!(super::decode("0"), None);
        assert_eq!(super::decode("zz"), None);
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(super::decode(&super::encode(&all)), Some(all));
        assert_eq!(super::byte(b'2', b'A'), Some(0x2a));
        assert_eq!(super::byte(b'g', b'0'), None);
    }
}
