//! Work over many people spread on a few threads with the results kept in order: the planner's
//! lines, the mapping's evaluations and the reading of wanted userNames of a large run. Only
//! the splitting lives here; what is computed per person belongs to the caller.

/// Items below which the work stays on the calling thread.
pub const PARALLEL_FROM: usize = 512;

/// `f` over `0..n`, each result handed to `sink` in index order: on up to four threads for
/// large inputs. Work is done in batches, so at most one batch's results are held at once.
pub fn map_in_order<R: Send>(n: usize, f: &(dyn Fn(usize) -> R + Sync), mut sink: impl FnMut(R)) {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get().min(4))
        .unwrap_or(1);
    if threads < 2 || n < PARALLEL_FROM {
        (0..n).map(f).for_each(sink);
        return;
    }
    let batch = (threads * 4096).min(n);
    let mut base = 0;
    while base < n {
        let len = batch.min(n - base);
        let chunk = len.div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|c| {
                    let from = base + c * chunk;
                    let to = (from + chunk).min(base + len);
                    scope.spawn(move || (from..to).map(f).collect::<Vec<R>>())
                })
                .collect();
            for h in handles {
                match h.join() {
                    Ok(part) => part.into_iter().for_each(&mut sink),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
        base += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_index_order_on_any_size() {
        for n in [0, 1, PARALLEL_FROM - 1, PARALLEL_FROM, 20_001] {
            let mut out = Vec::new();
            map_in_order(n, &|i| i * 2, |r| out.push(r));
            assert_eq!(out, (0..n).map(|i| i * 2).collect::<Vec<_>>());
        }
    }
}
