//! Data parallelism for the pure stages (mapping, plan): one helper, scoped
//! threads from the standard library, results in input order.

/// How many threads for `n` items: a thread is worth starting for a few
/// thousand items, never more than there are cores.
fn threads_for(n: usize) -> usize {
    const MIN_PER_THREAD: usize = 4096;
    std::thread::available_parallelism()
        .map_or(1, |c| c.get())
        .min(n / MIN_PER_THREAD)
        .max(1)
}

/// `f` over `items`, in order, on up to as many threads as there are cores
/// (one thread for small inputs). The result is the same as a plain
/// `items.iter().map(f).collect()`.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads_for(items.len());
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for part in parts {
            out.extend(
                part.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        out
    })
}

/// [`par_map`] with each item lent mutably to `f`.
pub(crate) fn par_map_mut<T: Send, R: Send>(
    items: &mut [T],
    f: impl Fn(&mut T) -> R + Sync,
) -> Vec<R> {
    let threads = threads_for(items.len());
    if threads == 1 {
        return items.iter_mut().map(f).collect();
    }
    let len = items.len();
    let chunk = len.div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks_mut(chunk)
            .map(|part| scope.spawn(|| part.iter_mut().map(&f).collect::<Vec<R>>()))
            .collect();
        let mut out = Vec::with_capacity(len);
        for part in parts {
            out.extend(
                part.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        out
    })
}

/// `f` on every item, in place, on up to as many threads as there are
/// cores (one thread for small inputs).
pub(crate) fn par_for_each_mut<T: Send>(items: &mut [T], f: impl Fn(&mut T) + Sync) {
    let threads = threads_for(items.len());
    if threads == 1 {
        return items.iter_mut().for_each(f);
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks_mut(chunk)
            .map(|part| scope.spawn(|| part.iter_mut().for_each(&f)))
            .collect();
        for part in parts {
            part.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_for_each_mut_reaches_every_item_once() {
        for n in [0, 1, 4095, 4096 * 2 + 3, 50_001] {
            let mut items: Vec<u64> = (0..n).collect();
            par_for_each_mut(&mut items, |x| *x = x.wrapping_mul(3) + 1);
            let want: Vec<u64> = (0..n).map(|x| x * 3 + 1).collect();
            assert_eq!(items, want, "n = {n}");
        }
    }

    #[test]
    fn par_map_mut_keeps_order_and_reaches_every_item_once() {
        for n in [0, 1, 4095, 4096 * 2 + 3, 50_001] {
            let mut items: Vec<u64> = (0..n).collect();
            let out = par_map_mut(&mut items, |x| {
                let before = *x;
                *x += 1;
                before * 2
            });
            assert_eq!(out, (0..n).map(|x| x * 2).collect::<Vec<_>>(), "n = {n}");
            assert_eq!(items, (1..=n).collect::<Vec<_>>(), "n = {n}");
        }
    }

    #[test]
    fn par_map_keeps_order_and_results_on_any_size() {
        for n in [0, 1, 4095, 4096 * 2 + 3, 50_001] {
            let items: Vec<u64> = (0..n).collect();
            let f = |x: &u64| x.wrapping_mul(2_654_435_761) % 1000;
            let want: Vec<u64> = items.iter().map(f).collect();
            assert_eq!(par_map(&items, f), want, "n = {n}");
        }
    }
}
