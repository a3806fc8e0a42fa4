//! Quantized weight rows against many int8-prepared inputs at once (prefill, batched decode):
//! one int32 lane per input.
//!
//! [`super::affine8`]'s kernels give each int32 lane four products of one input; a block of
//! 32 values then ends in sixteen partial sums that must each be converted, stepped and
//! scaled. Here the inputs are laid out as a panel instead: sixteen inputs side by side, four
//! codes of each per 512-bit vector, so that one `vpdpbusd` against four weight codes
//! (broadcast to every lane) adds four products to each of the sixteen inputs' sums. A block
//! of 32 values is eight of them, and its sums for all sixteen inputs end in one register: one
//! conversion, one multiply by the inputs' steps and one by the group's scale serve sixteen
//! outputs. The biases meet the exact input sums per group as before.
//!
//! `vpdpbusd` multiplies unsigned bytes by signed ones, and the broadcast operand is the signed
//! one: the weights. A weight row is unpacked once per call into signed bytes (4-bit codes
//! as they are; 8-bit codes less 128), the input codes are stored plus 128 (unsigned), and
//! each block's integer sum starts from the exact correction of both offsets.
//!
//! The order of a block's columns inside the panel follows how a weight row unpacks (4-bit:
//! per 128 columns, the low nibbles of its 64 bytes, then the high ones; 8-bit: natural), so
//! the weights need no shuffle. Rows need a multiple of 128 columns and a CPU with AVX-512
//! VNNI.
//!
//! Inputs in the int16 form ([`super::affine`]) make panels too: two codes of each input per
//! lane, `vpdpwssd` against two weight codes widened to int16 (no offsets: both are signed),
//! sixteen steps a block. Both the weights and the inputs keep the int16 form's order, each
//! span of 64 values evens first, which is how both widths unpack.

use super::cpu;
use super::layout::{
    pair_offset, steps_per_block, InputForm, QInput, QInput8, BLOCK_LEN, PAIRS, PANEL_CHUNK, QUADS,
};
pub use super::layout::{Panel, Unpacked, WeightRows, PANEL};
#[cfg(target_arch = "x86_64")]
use super::x86::avx512_panel;

/// Fewer inputs than this run the row kernels of [`super::affine`] and [`super::affine8`]
/// instead: a panel costs the same per row whatever it holds, so below this many inputs the
/// row kernels are faster (the measurements are in docs/BENCHMARKS.md).
pub const PANEL_MIN: usize = 10;
/// Whether rows of `bits` bits in groups of `group_size` over `cols` columns have panel
/// kernels on this CPU.
pub fn supported(bits: u8, group_size: usize, cols: usize) -> bool {
    matches!(bits, 4 | 8)
        && matches!(group_size, 32 | 64 | 128)
        && cols > 0
        && cols.is_multiple_of(PANEL_CHUNK)
        && cpu::has_avx512_vnni()
}

/// Where the four codes of quad `j` of block `b` lie in an int8-prepared input: in its
/// natural codes (8 bits), or in its codes evens first per 64 values (4 bits).
fn input_offset(bits: u8, b: usize, j: usize) -> usize {
    if bits == 8 {
        return BLOCK_LEN * b + 4 * j;
    }
    // Low nibble `i` of a chunk is its column 2i, high nibble `i` its column 2i + 1; evens
    // first per 64 values puts column 2i at 64·(i / 32) + i % 32 and 2i + 1 32 further.
    let (c, k) = (b / 4, b % 4);
    let i = 16 * k + 4 * (j % 4);
    PANEL_CHUNK * c + 64 * (i / 32) + i % 32 + 32 * (j / 4)
}

impl Panel {
    /// The panel of `xs` (1 to [`PANEL`] inputs of one width) for rows of `bits` bits in
    /// groups of `group_size`; `None` when [`supported`] is false or the inputs disagree.
    pub fn new(bits: u8, group_size: usize, xs: &[QInput8<'_>]) -> Option<Panel> {
        let cols = xs.first()?.codes.len();
        if xs.len() > PANEL || !supported(bits, group_size, cols) {
            return None;
        }
        let (blocks, groups) = (cols / BLOCK_LEN, cols / group_size);
        let mut codes = vec![0u8; blocks * QUADS * PANEL * 4];
        let mut steps = vec![0f32; blocks * PANEL];
        let mut start = vec![0i32; blocks * PANEL];
        let mut sums = vec![0f32; groups * PANEL];
        for (n, x) in xs.iter().enumerate() {
            let src = if bits == 8 { x.codes } else { x.even_codes };
            let group_sums = x.group_sums(group_size)?;
            if x.codes.len() != cols || src.len() != cols || group_sums.len() != groups {
                return None;
            }
            for b in 0..blocks {
                steps[b * PANEL + n] = x.step(b);
                if bits == 8 {
                    let total: i32 = x.codes[b * BLOCK_LEN..(b + 1) * BLOCK_LEN]
                        .iter()
                        .map(|&c| i32::from(c))
                        .sum();
                    start[b * PANEL + n] = 128 * total;
                }
            }
            for (g, &s) in group_sums.iter().enumerate() {
                sums[g * PANEL + n] = s;
            }
        }
        // Each quad's sixteen lanes (one per input) side by side, as in `new_int16`.
        for (slot, lanes) in codes.chunks_exact_mut(PANEL * 4).enumerate() {
            let s = input_offset(bits, slot / QUADS, slot % QUADS);
            for (lane, x) in lanes.chunks_exact_mut(4).zip(xs) {
                let src = if bits == 8 { x.codes } else { x.even_codes };
                let quad = [src[s], src[s + 1], src[s + 2], src[s + 3]].map(|c| c as u8);
                let plus = u32::from_le_bytes(quad) ^ 0x8080_8080;
                lane.copy_from_slice(&plus.to_le_bytes());
            }
        }
        Some(Panel {
            form: InputForm::Int8,
            n: xs.len(),
            codes,
            steps,
            start,
            sums,
        })
    }

    /// The panel of `xs` (1 to [`PANEL`] int16-prepared inputs of one width) for rows in
    /// groups of `group_size`; `None` when [`supported`] is false or the inputs disagree.
    pub fn new_int16(bits: u8, group_size: usize, xs: &[QInput<'_>]) -> Option<Panel> {
        let cols = xs.first()?.codes.len();
        if xs.len() > PANEL || !supported(bits, group_size, cols) {
            return None;
        }
        let (blocks, groups) = (cols / BLOCK_LEN, cols / group_size);
        let mut codes = vec![0u8; blocks * PAIRS * PANEL * 4];
        let mut steps = vec![0f32; blocks * PANEL];
        let mut sums = vec![0f32; groups * PANEL];
        for (n, x) in xs.iter().enumerate() {
            let group_sums = x.group_sums(group_size)?;
            if x.codes.len() != cols || x.blocks() != blocks || group_sums.len() != groups {
                return None;
            }
            for b in 0..blocks {
                steps[b * PANEL + n] = x.step(b);
            }
            for (g, &s) in group_sums.iter().enumerate() {
                sums[g * PANEL + n] = s;
            }
        }
        // Each pair's sixteen lanes (one per input) side by side: the writes fill one cache
        // line at a time while the inputs are read in step.
        for (slot, lanes) in codes.chunks_exact_mut(PANEL * 4).enumerate() {
            let at = pair_offset(slot / PAIRS, slot % PAIRS) / 2;
            for (lane, x) in lanes.chunks_exact_mut(4).zip(xs) {
                let pair = u32::from(x.codes[at] as u16) | u32::from(x.codes[at + 1] as u16) << 16;
                lane.copy_from_slice(&pair.to_le_bytes());
            }
        }
        Some(Panel {
            form: InputForm::Int16,
            n: xs.len(),
            codes,
            steps,
            start: vec![0i32; blocks * PANEL],
            sums,
        })
    }
}

impl Unpacked {
    /// Unpacks the row `words` (`cols · bits / 32` words) of `bits` bits for inputs in `form`;
    /// `false`, changing nothing, when [`supported`] is false for it.
    pub fn unpack(&mut self, form: InputForm, bits: u8, cols: usize, words: &[u32]) -> bool {
        if !supported(bits, 32, cols) || words.len() != cols * usize::from(bits) / 32 {
            return false;
        }
        let width = match form {
            InputForm::Int8 => 1,
            InputForm::Int16 => 2,
        };
        self.form = form;
        self.codes.resize(width * cols, 0);
        self.sums.resize(cols / BLOCK_LEN, 0);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512 F, BW and VNNI are present (`supported`); lengths checked above.
        unsafe {
            match form {
                InputForm::Int8 => {
                    avx512_panel::unpack(bits, words, &mut self.codes, &mut self.sums)
                }
                InputForm::Int16 => avx512_panel::unpack_int16(bits, words, &mut self.codes),
            }
        };
        true
    }
}

/// `out[r · stride + k] = Σ w_r·x_k` for the rows `w` and every input `k` of `panel`
/// (`group_size` columns a group). `false`, writing nothing, when a length disagrees.
pub fn dots<const R: usize>(
    bits: u8,
    group_size: usize,
    w: WeightRows<'_, R>,
    panel: &Panel,
    out: &mut [f32],
    stride: usize,
) -> bool {
    let blocks = panel.blocks();
    let cols = blocks * BLOCK_LEN;
    let groups = cols / group_size.max(1);
    let width = match panel.form {
        InputForm::Int8 => 1,
        InputForm::Int16 => 2,
    };
    let fits = supported(bits, group_size, cols)
        && panel.codes.len() == blocks * steps_per_block(panel.form) * PANEL * 4
        && panel.start.len() == blocks * PANEL
        && panel.sums.len() == groups * PANEL
        && (0..R).all(|r| {
            w.rows[r].form == panel.form
                && w.rows[r].codes.len() == width * cols
                && w.rows[r].sums.len() == blocks
                && w.scales[r].len() == groups
                && w.biases[r].len() == groups
        })
        && stride >= panel.n
        && out.len() >= (R - 1) * stride + panel.n;
    if !fits {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: AVX-512 F, BW and VNNI are present (`supported`); lengths checked above.
        let dots = unsafe { avx512_panel::dots::<R>(bits, group_size, w, panel) };
        for (r, d) in dots.iter().enumerate() {
            out[r * stride..r * stride + panel.n].copy_from_slice(&d[..panel.n]);
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}
