//! Tests of the kernels' thread pool.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use super::pool::*;

#[test]
fn every_task_runs_once() {
    for tasks in [0, 1, 2, 3, 17, 1000] {
        let counts: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
        run(tasks, |i| {
            counts[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(
            counts.iter().all(|c| c.load(Ordering::Relaxed) == 1),
            "{tasks}"
        );
    }
}

#[test]
fn map_keeps_order_and_chunks_cover_the_data() {
    let words: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
    let lens = map_owned(words.clone(), |w| w.len());
    assert_eq!(lens, words.iter().map(String::len).collect::<Vec<_>>());
    assert_eq!(
        map(50, |i| i * i),
        (0..50).map(|i| i * i).collect::<Vec<_>>()
    );
    let mut data = vec![0usize; 103];
    for_each_chunk(&mut data, 10, |c, chunk| {
        for (k, v) in chunk.iter_mut().enumerate() {
            *v = c * 10 + k;
        }
    });
    assert_eq!(data, (0..103).collect::<Vec<_>>());
}

#[test]
fn calls_from_tasks_and_threads_run_every_task() {
    let total = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..50 {
                    run(8, |_| {
                        run(3, |_| {
                            total.fetch_add(1, Ordering::Relaxed);
                        })
                    });
                }
            });
        }
    });
    assert_eq!(total.load(Ordering::Relaxed), 4 * 50 * 8 * 3);
}

#[test]
fn a_panicking_task_panics_the_call_after_the_others_finish() {
    for threads in [1, 2] {
        let ran = AtomicUsize::new(0);
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_threads(threads, || {
                run(16, |i| {
                    ran.fetch_add(1, Ordering::Relaxed);
                    assert_ne!(i, 5, "task five");
                })
            })
        }));
        assert!(got.is_err(), "{threads} threads");
        assert_eq!(ran.load(Ordering::Relaxed), 16, "{threads} threads");
    }
    // The pool still works.
    assert_eq!(map(4, |i| i + 1), vec![1, 2, 3, 4]);
}
