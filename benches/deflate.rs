//! permessage-deflate's payload transformation (`protocol::deflate`, over
//! flate2) against libdeflate's one-shot calls (libdeflater), on 1 KiB of
//! chat-like text and 64 KiB of the same: compress at levels 1 and 6,
//! inflate, and what making a fresh context per message costs.
//!
//! Run: `cargo bench --bench deflate` (flate2 on zlib-rs, the backend
//! Cargo.toml picks). The comparison with miniz_oxide recorded in
//! `protocol::deflate` was made before that choice, with flate2's default
//! features; to make it again, give flate2 its default features in
//! Cargo.toml and run `DEFLATE_BACKEND=miniz_oxide cargo bench --bench
//! deflate` (the variable only names the backend in the output). Before
//! the timings it prints the compressed sizes and the bytes each context
//! allocates when made (libdeflate allocates on the C heap, which the
//! counter does not see).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use wschat::protocol::deflate::{self, Compressor, Inflater};

/// Counts the bytes allocated, to report each context's size.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed straight to the system allocator; the
// counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size.saturating_sub(layout.size()), Ordering::Relaxed);
        // SAFETY: as for `alloc`; `ptr` came from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated while `make` runs (what it returns is kept alive).
fn allocated_by<T>(make: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATED.load(Ordering::Relaxed);
    let made = make();
    (ALLOCATED.load(Ordering::Relaxed) - before, made)
}

/// Chat-like text: lines of common words with names and punctuation,
/// from a fixed pseudo-random sequence.
fn chat_text(len: usize) -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "hello", "there", "how", "are", "you", "today", "the", "build", "is", "green", "again",
        "did", "anyone", "see", "that", "ticket", "about", "deploys", "lunch", "at", "noon",
        "sounds", "good", "thanks",
    ];
    const NAMES: [&str; 4] = ["User 51234: ", "alice: ", "bob: ", "User 40022: "];
    let mut out = Vec::with_capacity(len + 16);
    let mut x: u32 = 0x2545_f491;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as usize
    };
    while out.len() < len {
        out.extend_from_slice(NAMES[next() % NAMES.len()].as_bytes());
        for i in 0..(4 + next() % 10) {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(WORDS[next() % WORDS.len()].as_bytes());
        }
        out.extend_from_slice(if next() % 3 == 0 { b"?\n" } else { b".\n" });
    }
    out.truncate(len);
    out
}

const SIZES: [(usize, &str); 2] = [(1024, "1KiB"), (64 * 1024, "64KiB")];

fn backend() -> String {
    std::env::var("DEFLATE_BACKEND").unwrap_or_else(|_| "zlib-rs".into())
}

fn libdeflate_compress(c: &mut libdeflater::Compressor, text: &[u8], out: &mut Vec<u8>) -> usize {
    out.resize(c.deflate_compress_bound(text.len()), 0);
    c.deflate_compress(text, out).expect("room enough")
}

/// Sizes and context costs, printed once.
fn report() {
    let b = backend();
    for (size, name) in SIZES {
        let text = chat_text(size);
        for level in [1, 6] {
            let mut out = Vec::new();
            Compressor::with_level(level).compress_into(&[&text], &mut out);
            let mut lc = libdeflater::Compressor::new(
                libdeflater::CompressionLvl::new(level as i32).unwrap(),
            );
            let mut lout = Vec::new();
            let ln = libdeflate_compress(&mut lc, &text, &mut lout);
            println!(
                "size {name} level {level}: flate2/{b} {} B, libdeflate {} B (its own tail kept)",
                out.len(),
                ln
            );
        }
    }
    for level in [1, 6] {
        let (n, c) = allocated_by(|| Compressor::with_level(level));
        drop(c);
        let (l, lc) = allocated_by(|| {
            libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level as i32).unwrap())
        });
        drop(lc);
        println!("compressor level {level}: flate2/{b} {n} B, libdeflate {l} B");
    }
    let (n, i) = allocated_by(|| Inflater::new(1 << 20));
    drop(i);
    let (l, ld) = allocated_by(libdeflater::Decompressor::new);
    drop(ld);
    println!("inflater: flate2/{b} {n} B, libdeflate {l} B");
}

fn compress(c: &mut Criterion) {
    report();
    let b = backend();
    for (size, name) in SIZES {
        let text = chat_text(size);
        let mut group = c.benchmark_group(format!("compress_{name}"));
        group.throughput(Throughput::Bytes(size as u64));
        for level in [1u32, 6] {
            let mut ours = Compressor::with_level(level);
            let mut out = Vec::new();
            group.bench_function(BenchmarkId::new(format!("flate2-{b}"), level), |bench| {
                bench.iter(|| {
                    out.clear();
                    ours.compress_into(&[black_box(&text)], &mut out);
                    black_box(out.len())
                })
            });
            let mut theirs = libdeflater::Compressor::new(
                libdeflater::CompressionLvl::new(level as i32).unwrap(),
            );
            let mut lout = Vec::new();
            group.bench_function(BenchmarkId::new("libdeflate", level), |bench| {
                bench.iter(|| {
                    black_box(libdeflate_compress(
                        &mut theirs,
                        black_box(&text),
                        &mut lout,
                    ))
                })
            });
        }
        group.bench_function(BenchmarkId::new(format!("flate2-{b}-fresh"), 6), |bench| {
            bench.iter(|| black_box(deflate::compress(black_box(&text)).len()))
        });
        group.finish();
    }
}

fn inflate(c: &mut Criterion) {
    let b = backend();
    for (size, name) in SIZES {
        let text = chat_text(size);
        let packed = deflate::compress(&text);
        // libdeflate needs the whole message, tail included, and an output
        // buffer of the final size up front (one-shot).
        let mut whole = packed.clone();
        whole.extend_from_slice(&deflate::TAIL);
        whole.push(0x03); // an empty final fixed block (BFINAL 1, BTYPE 01, end code)
        whole.push(0x00);
        let mut group = c.benchmark_group(format!("inflate_{name}"));
        group.throughput(Throughput::Bytes(size as u64));
        let mut ours = Inflater::new(1 << 20);
        group.bench_function(format!("flate2-{b}"), |bench| {
            bench.iter(|| {
                ours.push(black_box(&packed)).unwrap();
                black_box(ours.finish().unwrap().len())
            })
        });
        group.bench_function(format!("flate2-{b}-fresh"), |bench| {
            bench.iter(|| black_box(deflate::inflate(black_box(&packed), 1 << 20).unwrap().len()))
        });
        let mut theirs = libdeflater::Decompressor::new();
        let mut out = vec![0u8; size];
        assert_eq!(
            theirs
                .deflate_decompress(&whole, &mut out)
                .map_err(|e| format!("{e:?}")),
            Ok(size)
        );
        assert_eq!(out, text);
        group.bench_function("libdeflate", |bench| {
            bench.iter(|| {
                black_box(
                    theirs
                        .deflate_decompress(black_box(&whole), &mut out)
                        .unwrap(),
                )
            })
        });
        group.finish();
    }
}

fn short() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = short();
    targets = compress, inflate
}
criterion_main!(benches);
