//! How `encode` cuts many texts into forward passes: sorted by length, so that texts of like
//! length share a batch and little is padding, and cut so that no batch holds more padded
//! tokens than a budget. The memory of a padded batch grows with its size times its longest
//! text (and its attention scores with the square of that), so the budget, not the number of
//! texts a caller sends, bounds what one pass allocates.

/// The default budget of padded tokens (batch size × longest text) in one encode pass.
pub const DEFAULT_ENCODE_BATCH_TOKENS: usize = 4096;

/// Indices into `lens` (each text's token count), grouped into batches: shortest texts first,
/// each batch's `len() × longest` at most `max_tokens` (a text longer than that alone). Every
/// index appears exactly once.
pub fn token_batches(lens: &[usize], max_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted ascending, so this text is the batch's longest once it joins.
        let padded = (current.len() + 1).saturating_mul(lens[i]);
        if !current.is_empty() && padded > max_tokens {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_once_and_every_batch_within_budget() {
        let lens: Vec<usize> = (0..500).map(|i| 1 + (i * 7919) % 300).collect();
        for budget in [1, 64, 300, 1000, 4096, 1 << 20] {
            let batches = token_batches(&lens, budget);
            let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..lens.len()).collect::<Vec<_>>(), "budget {budget}");
            for b in &batches {
                let longest = b.iter().map(|&i| lens[i]).max().unwrap();
                assert!(
                    b.len() == 1 || b.len() * longest <= budget,
                    "budget {budget}: {} texts of up to {longest} tokens",
                    b.len()
                );
            }
        }
    }

    #[test]
    fn short_texts_share_a_batch_and_a_long_one_runs_alone() {
        let batches = token_batches(&[3, 5000, 4, 2], 100);
        assert_eq!(batches, vec![vec![3, 0, 2], vec![1]]);
        assert!(token_batches(&[], 100).is_empty());
    }
}
