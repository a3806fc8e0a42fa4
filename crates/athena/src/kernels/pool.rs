//! The kernels' thread pool: the calling thread and `threads − 1` persistent workers share a
//! call's tasks, claimed one at a time from one atomic counter.
//!
//! Between calls the workers spin for [`SPIN`] before they sleep, so that the short products
//! of a decode step, one after another with a little serial work between them, start without
//! a wake-up: on a loaded machine waking a sleeping thread costs tens of microseconds, as much
//! as a small product. A call made while another is running (from another thread, or from
//! inside a task) runs its tasks on the calling thread alone; the outputs are the same either
//! way, since each task computes the same thing whichever thread runs it.
//!
//! The pool has as many threads as rayon's global pool (`RAYON_NUM_THREADS`), so one setting
//! sizes both.

use std::any::Any;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker waits for the next call, spinning, before it sleeps.
const SPIN: Duration = Duration::from_micros(500);
/// Tasks one call may have (the counter's task fields are 24 bits).
const MAX_TASKS: usize = (1 << 24) - 1;

/// Products below this many multiply-adds run on the calling thread (a router's 64 × 2048
/// runs on the pool: a call costs a few microseconds, the product tens).
pub(super) const PAR_MIN_WORK: usize = 1 << 16;
/// `buf` when it takes at most `max_bytes` (a per-thread buffer worth keeping for the next
/// call), else an empty vector, freeing it.
pub(super) fn keep_for_reuse<T>(buf: Vec<T>, max_bytes: usize) -> Vec<T> {
    match buf.capacity() * std::mem::size_of::<T>() <= max_bytes {
        true => buf,
        false => Vec::new(),
    }
}

type Task<'a> = &'a (dyn Fn(usize) + Sync);

/// What the workers and the calling thread share.
struct Shared {
    /// The current call: generation (16 bits), tasks (24), next unclaimed task (24).
    counter: AtomicU64,
    /// The current call's task function (a pointer to a `Task` on the caller's stack).
    task: AtomicPtr<Task<'static>>,
    /// Tasks of the current call that have finished.
    done: AtomicUsize,
    /// The first panic of the current call's tasks.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Workers asleep, and the condition they sleep on.
    sleeping: Mutex<usize>,
    wake: Condvar,
}

/// The panic of `f`, if it panics.
fn caught(f: impl FnOnce()) -> Option<Box<dyn Any + Send>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).err()
}

fn pack(generation: u64, tasks: usize, next: usize) -> u64 {
    (generation << 48) | ((tasks as u64) << 24) | next as u64
}

fn tasks_of(v: u64) -> usize {
    ((v >> 24) & MAX_TASKS as u64) as usize
}

fn next_of(v: u64) -> usize {
    (v & MAX_TASKS as u64) as usize
}

impl Shared {
    /// Claims and runs one task of the current call; `false` when none is left.
    fn run_one(&self) -> bool {
        let v = self.counter.load(Ordering::Acquire);
        let i = next_of(v);
        if i >= tasks_of(v) {
            return false;
        }
        if self
            .counter
            .compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return true;
        }
        // Read after the claim: the claimed task belongs to the call now running, which
        // published its function before its counter and cannot finish without this task.
        let task = self.task.load(Ordering::Acquire);
        // SAFETY: that call does not return before `done` counts this task.
        let f = unsafe { *task };
        if let Some(p) = caught(|| f(i)) {
            let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(p);
        }
        self.done.fetch_add(1, Ordering::Release);
        true
    }

    fn has_work(&self) -> bool {
        let v = self.counter.load(Ordering::SeqCst);
        next_of(v) < tasks_of(v)
    }

    fn work(&self) {
        loop {
            let idle = Instant::now();
            let mut spins = 0u32;
            while !self.run_one() {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) {
                    if idle.elapsed() > SPIN {
                        self.sleep();
                        break;
                    }
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }

    fn sleep(&self) {
        let mut sleeping = self.sleeping.lock().unwrap_or_else(|e| e.into_inner());
        *sleeping += 1;
        while !self.has_work() {
            sleeping = self.wake.wait(sleeping).unwrap_or_else(|e| e.into_inner());
        }
        *sleeping -= 1;
    }
}

/// The pool: its shared state, and the lock a call holds while it runs.
struct Pool {
    shared: Arc<Shared>,
    call: Mutex<u64>,
    threads: usize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = rayon::current_num_threads().max(1);
        let shared = Arc::new(Shared {
            counter: AtomicU64::new(0),
            task: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            panic: Mutex::new(None),
            sleeping: Mutex::new(0),
            wake: Condvar::new(),
        });
        let mut started = 1;
        for i in 1..threads {
            let s = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("athena-kernel-{i}"))
                .spawn(move || s.work());
            match spawned {
                Ok(_) => started += 1,
                Err(e) => {
                    tracing::warn!("kernel pool: could not start worker {i}: {e}");
                    break;
                }
            }
        }
        Pool {
            shared,
            call: Mutex::new(0),
            threads: started,
        }
    })
}

thread_local! {
    /// A limit on the threads of this thread's calls, set by [`with_threads`].
    static LIMIT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Threads a call from this thread can use: the calling thread and the pool's workers, or
/// fewer inside [`with_threads`].
pub fn threads() -> usize {
    let all = pool().threads;
    LIMIT.with(|l| l.get()).map_or(all, |n| n.clamp(1, all))
}

/// Runs `f` with this thread's calls limited to `threads` threads (one: the calling thread
/// alone); kernels also cut their work for that many.
pub fn with_threads<R>(threads: usize, f: impl FnOnce() -> R) -> R {
    let _restore = Restore(LIMIT.with(|l| l.replace(Some(threads.max(1)))));
    f()
}

/// Puts back the limit [`with_threads`] replaced, also when `f` panics.
struct Restore(Option<usize>);

impl Drop for Restore {
    fn drop(&mut self) {
        LIMIT.with(|l| l.set(self.0));
    }
}

/// Runs `f(i)` for every `i` in `0..tasks`, each exactly once, on the calling thread and the
/// pool's workers; returns when all have run. A panic in a task is resumed here after the
/// others have finished.
pub fn run(tasks: usize, f: impl Fn(usize) + Sync) {
    let pool = pool();
    // On the calling thread alone, with the same contract: every task runs, then the first
    // panic is resumed.
    let inline = || {
        let mut first = None;
        for i in 0..tasks {
            if let Some(p) = caught(|| f(i)) {
                first.get_or_insert(p);
            }
        }
        if let Some(p) = first {
            std::panic::resume_unwind(p);
        }
    };
    if tasks <= 1 || threads() == 1 {
        return inline();
    }
    // Another call is running (another thread's, or this task's caller): run here alone.
    let Ok(mut generation) = pool.call.try_lock() else {
        return inline();
    };
    for start in (0..tasks).step_by(MAX_TASKS) {
        let count = (tasks - start).min(MAX_TASKS);
        let part = |i: usize| f(start + i);
        let task: Task<'_> = &part;
        let s = &pool.shared;
        // SAFETY: the pointer is only dereferenced by a claim of this call's tasks, and this
        // function does not return before every claimed task has finished.
        let erased: *mut Task<'static> = (&task as *const Task<'_>).cast_mut().cast();
        s.task.store(erased, Ordering::Release);
        s.done.store(0, Ordering::Relaxed);
        *generation = (*generation + 1) & 0xffff;
        s.counter
            .store(pack(*generation, count, 0), Ordering::SeqCst);
        if *s.sleeping.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
            s.wake.notify_all();
        }
        while s.run_one() {}
        while s.done.load(Ordering::Acquire) < count {
            std::hint::spin_loop();
        }
        if let Some(p) = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take() {
            std::panic::resume_unwind(p);
        }
    }
}

/// `f(i)` for every `i` in `0..tasks`, in order, computed by [`run`].
pub fn map<T: Send>(tasks: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let slots: Vec<Mutex<Option<T>>> = (0..tasks).map(|_| Mutex::new(None)).collect();
    run(tasks, |i| {
        let y = f(i);
        *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(y);
    });
    slots
        .into_iter()
        .map(|s| {
            let y = s.into_inner().unwrap_or_else(|e| e.into_inner());
            y.expect("run returns after every task has run")
        })
        .collect()
}

/// `f(item)` for every item, in order, computed by [`run`] (each item moved into its task).
pub fn map_owned<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let items: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    map(items.len(), |i| {
        let item = items[i].lock().unwrap_or_else(|e| e.into_inner()).take();
        f(item.expect("each task takes its own item once"))
    })
}

/// Runs `f(i, chunk)` over `data` cut into chunks of `size` (the last may be shorter), by
/// [`run`].
pub fn for_each_chunk<T: Send>(data: &mut [T], size: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let chunks: Vec<Mutex<&mut [T]>> = data.chunks_mut(size.max(1)).map(Mutex::new).collect();
    run(chunks.len(), |i| {
        let mut chunk = chunks[i].lock().unwrap_or_else(|e| e.into_inner());
        f(i, &mut chunk)
    });
}
