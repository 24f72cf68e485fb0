//! Data parallelism for the pure stages (mapping, plan): one helper, scoped
//! threads from the standard library, results in input order.

/// `f` over `items`, in order, on up to as many threads as there are cores
/// (one thread for small inputs). The result is the same as a plain
/// `items.iter().map(f).collect()`.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const MIN_PER_THREAD: usize = 4096;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len() / MIN_PER_THREAD)
        .max(1);
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

#[cfg(test)]
mod tests {
    use super::*;

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
