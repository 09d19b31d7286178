//! A tiny block I/O benchmark for the volume benchmark (`bench_volumes` in
//! tests/volume_vm.rs): the same program runs inside a pod VM (copied into the test image with
//! the libraries it links) and on the host, so both sides do the very same system calls.
//!
//! `h8s-iobench FILE MODE BLOCK_BYTES OPS`: MODE is `seqread`, `seqwrite`, `randread` or
//! `randwrite`; every request is `BLOCK_BYTES` with `O_DIRECT` (page cache bypassed on both
//! sides); random offsets are uniform over the file's whole blocks; writes end with `fsync`.
//! Prints `ops=N secs=S` (monotonic clock of the side it runs on).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, mode, bs, ops] = args.as_slice() else {
        eprintln!("usage: h8s-iobench FILE seqread|seqwrite|randread|randwrite BLOCK_BYTES OPS");
        std::process::exit(2);
    };
    let (Ok(bs), Ok(ops)) = (bs.parse::<usize>(), ops.parse::<u64>()) else {
        eprintln!("BLOCK_BYTES and OPS are numbers");
        std::process::exit(2);
    };
    if bs == 0 || bs % 4096 != 0 {
        eprintln!("BLOCK_BYTES must be a multiple of 4096 (O_DIRECT)");
        std::process::exit(2);
    }
    let write = mode.ends_with("write");
    let random = mode.starts_with("rand");
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(file)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("open {file}: {e}");
            std::process::exit(1);
        }
    };
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let blocks = size / bs as u64;
    if blocks == 0 {
        eprintln!("{file} is smaller than one block");
        std::process::exit(1);
    }
    let layout = Layout::from_size_align(bs, 4096).expect("layout");
    // SAFETY: the layout has a non-zero size (checked above).
    let ptr = unsafe { alloc_zeroed(layout) };
    assert!(!ptr.is_null(), "out of memory");
    // SAFETY: `ptr` is a live allocation of `bs` bytes, used only through this slice and
    // freed after its last use below.
    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, bs) };
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i * 31 + 7) as u8;
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let t = Instant::now();
    for i in 0..ops {
        let block = if random {
            // xorshift64: cheap, good enough to defeat readahead.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % blocks
        } else {
            i % blocks
        };
        let off = block * bs as u64;
        let r = if write {
            f.write_all_at(buf, off)
        } else {
            f.read_exact_at(buf, off)
        };
        if let Err(e) = r {
            eprintln!("{mode} at {off}: {e}");
            std::process::exit(1);
        }
    }
    if write {
        if let Err(e) = f.sync_all() {
            eprintln!("fsync: {e}");
            std::process::exit(1);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    // SAFETY: allocated above with the same layout; `buf` is not used after this.
    unsafe { dealloc(ptr, layout) };
    println!("ops={ops} secs={secs:.6}");
}
