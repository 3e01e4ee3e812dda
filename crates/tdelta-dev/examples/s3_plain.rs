//! The plain baseline of `scripts/bench-remote`: uploads every file under a
//! directory as plain objects, or downloads them back, with the same client
//! as tdelta's remotes and the same request shape:
//!
//! - `object_store` (the version tdelta uses), `AmazonS3Builder::from_env`,
//!   the endpoint from `AWS_ENDPOINT_URL`, region `us-east-1` unless set,
//!   the same retry settings;
//! - a tokio runtime of 2 workers, driven by `--jobs` threads (default 8,
//!   tdelta's `--jobs` default) that each take the next file, as tdelta's
//!   transfer engine does;
//! - files of at least `MULTIPART_THRESHOLD` (16 MiB) go up as multipart
//!   uploads of `PART_SIZE` (8 MiB) parts with `PARTS_IN_FLIGHT` (4) in
//!   flight per upload; smaller ones as one put;
//! - downloads stream each object into a file.
//!
//! What it does not do is what tdelta adds: listing, the checks (hashing a
//! pack, parsing an index), create-only puts, refs.
//!
//! ```text
//! s3_plain up   s3://bucket/prefix DIR [--jobs N]
//! s3_plain down s3://bucket/prefix DIR [--jobs N]
//! ```
//! Prints `plain-up|plain-down BYTES SECONDS`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tdelta::backend::object::{MULTIPART_THRESHOLD, PART_SIZE, PARTS_IN_FLIGHT, RETRIES};

type R<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn files(dir: &FsPath, base: &FsPath, out: &mut Vec<(String, PathBuf, u64)>) -> R<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            files(&p, base, out)?;
        } else {
            let name = p.strip_prefix(base)?.to_string_lossy().into_owned();
            out.push((name, p.clone(), e.metadata()?.len()));
        }
    }
    Ok(())
}

fn upload(rt: &tokio::runtime::Runtime, s: &dyn ObjectStore, path: &Path, file: &FsPath, len: u64) -> R<()> {
    let mut f = File::open(file)?;
    if len < MULTIPART_THRESHOLD {
        let mut buf = Vec::with_capacity(len as usize);
        f.read_to_end(&mut buf)?;
        rt.block_on(s.put(path, PutPayload::from(buf)))?;
        return Ok(());
    }
    rt.block_on(async {
        let up = s.put_multipart(path).await?;
        let mut w = WriteMultipart::new_with_chunk_size(up, PART_SIZE);
        let mut buf = vec![0u8; PART_SIZE];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            w.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            w.write(&buf[..n]);
        }
        w.finish().await?;
        Ok(())
    })
}

fn download(rt: &tokio::runtime::Runtime, s: &dyn ObjectStore, path: &Path, file: &FsPath) -> R<u64> {
    if let Some(d) = file.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut out = File::create(file)?;
    rt.block_on(async {
        let res = s.get(path).await?;
        let mut stream = res.into_stream();
        let mut got = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            out.write_all(&chunk)?;
            got += chunk.len() as u64;
        }
        Ok(got)
    })
}

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: s3_plain up|down s3://bucket/prefix DIR [--jobs N]";
    if args.len() < 3 {
        return Err(usage.into());
    }
    let (mode, url, dir) = (args[0].as_str(), args[1].as_str(), PathBuf::from(&args[2]));
    let jobs: usize = match args.iter().position(|a| a == "--jobs") {
        Some(i) => args.get(i + 1).ok_or(usage)?.parse()?,
        None => 8,
    };
    let rest = url.strip_prefix("s3://").ok_or(usage)?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Ok(ep) = std::env::var("AWS_ENDPOINT_URL") {
        b = b.with_allow_http(ep.starts_with("http://127.")).with_endpoint(ep);
    }
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
        b = b.with_region("us-east-1");
    }
    b = b.with_retry(object_store::RetryConfig {
        max_retries: RETRIES,
        retry_timeout: Duration::from_secs(60),
        ..object_store::RetryConfig::default()
    });
    let s = b.build()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let root = Path::from(prefix.trim_matches('/'));
    let obj = |name: &str| name.split('/').filter(|p| !p.is_empty()).fold(root.clone(), |p, part| p.join(part));

    let start = Instant::now();
    // The work list: the directory's files going up, the prefix's
    // objects coming down (one listing, as a fetch lists too).
    let items: Vec<(String, PathBuf, u64)> = match mode {
        "up" => {
            let mut v = Vec::new();
            files(&dir, &dir, &mut v)?;
            v
        }
        "down" => {
            let metas: Vec<_> = rt.block_on(s.list(Some(&root)).collect::<Vec<_>>());
            let skip = root.parts().count();
            let mut v = Vec::new();
            for m in metas {
                let m = m?;
                let name: Vec<String> = m.location.parts().skip(skip).map(|p| p.as_ref().to_string()).collect();
                let name = name.join("/");
                let local = dir.join(&name);
                v.push((name, local, m.size));
            }
            v
        }
        _ => return Err(usage.into()),
    };
    let next = AtomicUsize::new(0);
    let first: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|sc| {
        for _ in 0..jobs.clamp(1, 64).min(items.len().max(1)) {
            sc.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((name, local, len)) = items.get(i) else { break };
                    let r = match mode {
                        "up" => upload(&rt, &s, &obj(name), local, *len),
                        _ => download(&rt, &s, &obj(name), local).map(|_| ()),
                    };
                    if let Err(e) = r {
                        first.lock().unwrap().get_or_insert(format!("{name}: {e}"));
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = first.into_inner().unwrap() {
        return Err(e.into());
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes: u64 = items.iter().map(|i| i.2).sum();
    println!("plain-{mode} {bytes} {secs:.3}");
    Ok(())
}
