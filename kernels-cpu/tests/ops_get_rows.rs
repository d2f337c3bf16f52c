//! get_rows: rows of every format dequantized, against whole-matrix dequantization.

mod ops_support;

use ops_support::*;
use strata_kernels_cpu::ops::{self, OpError};
use strata_kernels_cpu::{dequantize, quantize, GgmlType};

#[test]
fn rows_equal_dequantized_matrix_rows() {
    let mut r = rng(21);
    let (n_rows, row_len) = (37, 512);
    let x = uniform(&mut r, n_rows * row_len, 2.0);
    for ty in GgmlType::WEIGHTS {
        let Some(bytes) = ty.bytes_for((n_rows * row_len) as u64) else {
            continue;
        };
        let mut data = vec![0u8; bytes as usize];
        if quantize(ty, &x, &mut data).is_err() {
            continue; // a format whose quantizer is not written yet
        }
        let mut all = vec![0.0; n_rows * row_len];
        dequantize(ty, &data, &mut all).unwrap();
        for rows in [
            vec![0u32],
            vec![36, 0, 5, 5, 20],
            (0..n_rows as u32).rev().cycle().take(300).collect(),
        ] {
            let mut got = vec![f32::NAN; rows.len() * row_len];
            let mut got_ref = got.clone();
            ops::get_rows(ty, &data, row_len, &rows, &mut got).unwrap();
            ops::get_rows_ref(ty, &data, row_len, &rows, &mut got_ref).unwrap();
            for (i, &row) in rows.iter().enumerate() {
                let want = &all[row as usize * row_len..][..row_len];
                assert_eq!(&got[i * row_len..][..row_len], want, "{ty} row {row}");
                assert_eq!(
                    &got_ref[i * row_len..][..row_len],
                    want,
                    "{ty} ref row {row}"
                );
            }
        }
    }
}

#[test]
fn bad_requests_are_errors() {
    let data = vec![0u8; 4 * 34]; // 4 rows of one Q8_0 block
    let mut out = vec![0.0; 32];
    assert_eq!(
        ops::get_rows(GgmlType::Q8_0, &data, 32, &[4], &mut out),
        Err(OpError::RowOutOfRange { row: 4, n_rows: 4 })
    );
    assert!(matches!(
        ops::get_rows(GgmlType::Q8_0, &data[..100], 32, &[0], &mut out),
        Err(OpError::Format(_))
    ));
    let mut out = vec![0.0; 33];
    assert!(matches!(
        ops::get_rows(GgmlType::Q8_0, &data, 33, &[0], &mut out),
        Err(OpError::Format(_))
    ));
    let mut out = vec![0.0; 32];
    ops::get_rows(GgmlType::Q8_0, &data, 32, &[3], &mut out).unwrap();
}
