//! The 12-byte packing of eight six-bit scales and eight six-bit mins used by Q4_K and
//! Q5_K. For sub-block j < 4: scale = q[j] & 63, min = q[j+4] & 63. For j ≥ 4 the low four
//! bits sit in q[j+4] (scale low nibble, min high nibble) and the top two bits in bits 6–7
//! of q[j−4] (scale) and q[j] (min).

use super::blocks::K_SCALE_SIZE;

/// (scales, mins) of the eight sub-blocks.
pub fn unpack(q: &[u8; K_SCALE_SIZE]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 0x0F) | ((q[j] >> 6) << 4);
        m[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
    (sc, m)
}

/// Inverse of [`unpack`]; values must be below 64.
pub fn pack(sc: &[u8; 8], m: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut q = [0u8; K_SCALE_SIZE];
    for j in 0..4 {
        q[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        q[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        q[j + 8] = (sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4);
    }
    q
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_value_survives_packing() {
        for base in 0..64u8 {
            let sc: [u8; 8] =
                std::array::from_fn(|j| ((u32::from(base) + 7 * j as u32) % 64) as u8);
            let m: [u8; 8] =
                std::array::from_fn(|j| ((u32::from(base) * 3 + 11 * j as u32) % 64) as u8);
            assert_eq!(super::unpack(&super::pack(&sc, &m)), (sc, m));
        }
    }
}
