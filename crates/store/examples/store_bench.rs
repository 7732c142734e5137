//! File store measurements: append throughput (`Interval` and `Always`, 16 B and 1 KiB
//! payloads), `get` and `remove` throughput, and recovery of a ~1 GB store whose writer was killed.
//!
//!     cargo run --release -p midge-store --example store_bench [recovery]
//!
//! Files go under `$MIDGE_BENCH_DIR` (default: the temp dir) and are removed afterwards.
//! The recovery rows re-run this program as the writer (`store_bench writer <dir> <size>`),
//! kill it with SIGKILL once the store passes 1 GB, and time `FileStore::open`; the page
//! cache is warm then (the data was just written), unless dropping it works (root, and a
//! writable /proc/sys/vm/drop_caches), which the output says.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use midge_store::{FileStore, FileStoreConfig, Store, SyncPolicy, DEFAULT_BLOCK_SIZE};

const GB: u64 = 1_000_000_000;

fn cfg(sync: SyncPolicy) -> FileStoreConfig {
    FileStoreConfig {
        block_size: DEFAULT_BLOCK_SIZE,
        sync,
    }
}

fn interval() -> SyncPolicy {
    SyncPolicy::Interval(Duration::from_secs(2))
}

fn fresh(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn rate(n: u64, d: Duration) -> String {
    let per_s = n as f64 / d.as_secs_f64();
    if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else if per_s >= 1e4 {
        format!("{:.0} k/s", per_s / 1e3)
    } else {
        format!("{per_s:.0} /s")
    }
}

fn mbps(bytes: u64, d: Duration) -> String {
    format!("{:.2} MB/s", bytes as f64 / d.as_secs_f64() / 1e6)
}

/// Appends `n` messages; returns the time taken (without a final sync).
fn append_run(dir: &Path, sync: SyncPolicy, n: u64, size: usize) -> (FileStore, Duration) {
    let (mut s, _) = FileStore::open(dir, cfg(sync)).expect("open");
    let payload = vec![b'x'; size];
    let subjects: Vec<String> = (0..16).map(|i| format!("bench.sub.{i}")).collect();
    let t = Instant::now();
    for i in 0..n {
        s.append(&subjects[(i % 16) as usize], None, &payload, i as i64)
            .expect("append");
    }
    (s, t.elapsed())
}

fn appends(base: &Path) -> (PathBuf, u64) {
    println!("## append");
    println!("| sync | payload | msgs | time | msgs/s | payload MB/s |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut kept = None;
    for (sync, name, size, n) in [
        (interval(), "Interval", 16usize, 3_000_000u64),
        (interval(), "Interval", 1024, 500_000),
        (SyncPolicy::Always, "Always", 16, 2_000),
        (SyncPolicy::Always, "Always", 1024, 2_000),
    ] {
        let dir = fresh(base, &format!("append-{name}-{size}"));
        let (mut s, d) = append_run(&dir, sync, n, size);
        let t = Instant::now();
        s.sync().expect("sync");
        let sync_time = t.elapsed();
        println!(
            "| {name} | {size} B | {n} | {:.2} s (+{:.0} ms final sync) | {} | {} |",
            d.as_secs_f64(),
            sync_time.as_secs_f64() * 1e3,
            rate(n, d),
            mbps(n * size as u64, d)
        );
        drop(s);
        if kept.is_none() {
            kept = Some((dir, n));
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    kept.expect("a store")
}

fn gets(dir: &Path, n: u64) {
    println!("\n## get ({n} messages of 16 B, 8 MiB blocks, warm page cache)");
    println!("| order | gets | time | gets/s |");
    println!("| --- | --- | --- | --- |");
    let (s, _) = FileStore::open(dir, cfg(interval())).expect("open");
    let t = Instant::now();
    let mut sum = 0u64;
    for seq in 1..=n {
        sum += s.get(seq).expect("get").payload.len() as u64;
    }
    let d = t.elapsed();
    println!(
        "| sequential | {n} | {:.2} s | {} |",
        d.as_secs_f64(),
        rate(n, d)
    );
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let k = n.min(1_000_000);
    let t = Instant::now();
    for _ in 0..k {
        // xorshift: a reproducible random order without a dependency.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sum += s.get(x % n + 1).expect("get").payload.len() as u64;
    }
    let d = t.elapsed();
    println!(
        "| random | {k} | {:.2} s | {} |",
        d.as_secs_f64(),
        rate(k, d)
    );
    assert!(sum > 0);
}

/// Removes every message oldest first, as a work queue does (blocks are deleted as they
/// empty).
fn removes(dir: &Path, n: u64) {
    let (mut s, _) = FileStore::open(dir, cfg(interval())).expect("open");
    let t = Instant::now();
    for seq in 1..=n {
        assert!(s.remove(seq, false).expect("remove"));
    }
    let d = t.elapsed();
    println!("\n## remove, oldest first (Interval, {n} messages of 16 B)");
    println!("| removes | time | removes/s |");
    println!("| --- | --- | --- |");
    println!("| {n} | {:.2} s | {} |", d.as_secs_f64(), rate(n, d));
}

fn drop_caches() -> bool {
    let synced = Command::new("sync").status().is_ok_and(|s| s.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// The writer: appends until killed, reporting the bytes stored every 64 MB.
fn writer(dir: &Path, size: usize) {
    let (mut s, _) = FileStore::open(dir, cfg(interval())).expect("writer open");
    let payload = vec![b'y'; size];
    let mut out = std::io::stdout().lock();
    let mut reported = 0;
    for i in 0u64.. {
        s.append(&format!("rec.{}", i % 64), None, &payload, i as i64)
            .expect("writer append");
        let bytes = s.state().bytes;
        if bytes - reported >= 64_000_000 {
            reported = bytes;
            writeln!(out, "{bytes}").expect("writer stdout");
            out.flush().expect("writer flush");
        }
    }
}

fn recovery(base: &Path, size: usize) {
    let dir = fresh(base, &format!("recover-{size}"));
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .arg("writer")
        .arg(&dir)
        .arg(size.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn writer");
    let out = child.stdout.take().expect("writer stdout");
    let t = Instant::now();
    for line in BufReader::new(out).lines() {
        let bytes: u64 = line.expect("writer line").trim().parse().expect("bytes");
        if bytes >= GB {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let write_time = t.elapsed();
    let on_disk: u64 = std::fs::read_dir(&dir)
        .expect("read_dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let cold = drop_caches();
    let t = Instant::now();
    let (s, report) = FileStore::open(&dir, cfg(interval())).expect("recover");
    let d = t.elapsed();
    println!(
        "| {size} B | {:.2} GB | {} | {:.1} s | {} | {:.2} s | {} | {} ({} from summaries) | {} |",
        on_disk as f64 / 1e9,
        report.msgs,
        write_time.as_secs_f64(),
        if cold { "cold" } else { "warm" },
        d.as_secs_f64(),
        mbps(on_disk, d),
        report.blocks,
        report.summaries,
        report.truncated_bytes,
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("writer") {
        let dir = PathBuf::from(&args[2]);
        writer(&dir, args[3].parse().expect("size"));
        return;
    }
    let base = std::env::var_os("MIDGE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("midge-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("bench dir");
    // `store_bench recovery`: the recovery rows only.
    if args.get(1).map(String::as_str) != Some("recovery") {
        let (dir, n) = appends(&base);
        gets(&dir, n);
        removes(&dir, n);
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("\n## recovery after SIGKILL of the writer (Interval, 8 MiB blocks)");
    println!("| payload | on disk | msgs | write time | cache | open time | read rate | blocks | torn bytes cut |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    recovery(&base, 1024);
    recovery(&base, 16);
    let _ = std::fs::remove_dir_all(&base);
}
