//! A [`QMatrix`] back in f32: the whole matrix, or one row (a quantized embedding lookup).

use rayon::prelude::*;

use super::pack;
use super::qmatrix::{QMatrix, PAR_MIN_VALUES};
use crate::error::{Error, Result};

impl QMatrix {
    /// The whole matrix in f32, [rows * cols] row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        let rows_per_task = (PAR_MIN_VALUES / self.cols).max(1);
        out.par_chunks_mut(self.cols * rows_per_task)
            .enumerate()
            .for_each(|(task, rows)| {
                for (i, row) in rows.chunks_exact_mut(self.cols).enumerate() {
                    self.dequantize_into(task * rows_per_task + i, row);
                }
            });
        out
    }

    /// Row `row` in f32 into `out` (`cols` long): a quantized embedding lookup.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) -> Result<()> {
        if row >= self.rows {
            return Err(Error::invalid(
                "row",
                format!("{row} is out of range for a matrix of {} rows", self.rows),
            ));
        }
        if out.len() != self.cols {
            return Err(Error::invalid(
                "out",
                format!(
                    "has {} values, expected one row of {}",
                    out.len(),
                    self.cols
                ),
            ));
        }
        self.dequantize_into(row, out);
        Ok(())
    }

    /// Dequantizes row `row` (in range) into `out` (`cols` long).
    fn dequantize_into(&self, row: usize, out: &mut [f32]) {
        let groups = self.groups();
        let group_words = self.params.group_words();
        let (Some(words), Some(scales), Some(biases)) = (
            self.packed.chunks_exact(groups * group_words).nth(row),
            self.scales.row(row, groups),
            self.biases.row(row, groups),
        ) else {
            return;
        };
        for (((words, &scale), &bias), out) in words
            .chunks_exact(group_words)
            .zip(scales.iter())
            .zip(biases.iter())
            .zip(out.chunks_exact_mut(self.params.group_size))
        {
            pack::unpack(self.params.bits, words, out);
            for v in out.iter_mut() {
                *v = scale * *v + bias;
            }
        }
    }
}
