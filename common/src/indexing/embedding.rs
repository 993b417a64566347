//! The `chunks.embedding` column: a vector stored as little-endian `f32` bytes. Written by
//! [`super::index`], read back by the worker's search.

/// Encodes a vector as little-endian f32 bytes (the `chunks.embedding` column).
pub fn encode_embedding(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes the `chunks.embedding` column (a trailing partial value is ignored).
pub fn decode_embedding(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_bytes_round_trip() {
        let v = vec![0.5, -1.25, 3.0];
        assert_eq!(decode_embedding(&encode_embedding(&v)), v);
    }
}
