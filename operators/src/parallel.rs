//! Splitting work across the cores: how many there are, and contiguous
//! shares of a range run on threads of their own.

use std::num::NonZeroUsize;
use std::thread;

/// Cores this process may run on (1 when the system does not say): what
/// every split of work across threads divides by.
pub(crate) fn cores() -> usize {
    thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// `work(first, end)` over `0..n` in one contiguous share per core, the
/// results in share order; one share, on this thread, unless `split` (the
/// caller's judgement that the work repays starting threads). The first
/// share runs on this thread while the others run on theirs; a panic in
/// any share is resumed here.
pub(crate) fn in_shares<T: Send>(
    n: usize,
    split: bool,
    work: impl Fn(usize, usize) -> T + Sync,
) -> Vec<T> {
    let threads = cores().min(n);
    if !split || threads <= 1 {
        return vec![work(0, n)];
    }
    let share = n.div_ceil(threads);
    thread::scope(|scope| {
        let work = &work;
        let others: Vec<_> = (share..n)
            .step_by(share)
            .map(|first| scope.spawn(move || work(first, (first + share).min(n))))
            .collect();
        let mut results = vec![work(0, share)];
        for handle in others {
            results.push(
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        results
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_range_once_in_order() {
        for n in [0, 1, 2, 7, 100] {
            for split in [false, true] {
                let shares = in_shares(n, split, |first, end| (first..end).collect::<Vec<_>>());
                assert_eq!(shares.concat(), (0..n).collect::<Vec<_>>(), "{n} {split}");
                assert!(shares.len() <= cores().max(1));
            }
        }
    }
}
