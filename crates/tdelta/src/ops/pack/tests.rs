//! Tests of the planner (pure: synthetic sources, no store).

use std::path::PathBuf;

use super::plan::{Job, Plan, windows};
use crate::checkpoint::{FileKind, Header, SourceFile, Stamp, TensorInfo};
use crate::lossy::LossyOptions;
use crate::store::manifest::Manifest;
use crate::{DType, Hash};

fn tensor(name: &str, dtype: DType, start: u64, len: u64) -> TensorInfo {
    TensorInfo { name: name.into(), dtype, shape: vec![len / (dtype.bits() / 8).max(1)], start, len }
}

fn st(path: &str, data_start: u64, tensors: Vec<TensorInfo>) -> SourceFile {
    let len = data_start + tensors.iter().map(|t| t.len).sum::<u64>();
    let header = Header { raw: vec![b' '; data_start as usize], data_start, tensors, metadata: None };
    file(path, len, FileKind::Safetensors(header))
}

fn file(path: &str, len: u64, kind: FileKind) -> SourceFile {
    let stamp = Stamp { len, mtime_ns: 0, ctime_ns: 0, dev: 0, ino: 0 };
    SourceFile { rel_path: path.into(), path: PathBuf::from(path), len, kind, stamp, mode: Some(0o644) }
}

/// Two files: a safetensors file (header of 80 bytes, a BF16 tensor of
/// 1000 bytes, an F32 tensor of 64), a blob of 300 bytes.
fn source() -> Vec<SourceFile> {
    vec![
        st("model.safetensors", 80, vec![tensor("w", DType::BF16, 80, 1000), tensor("b", DType::F32, 1080, 64)]),
        file("notes.txt", 300, FileKind::Blob),
    ]
}

#[test]
fn runs_follow_the_files_header_tensors_blob() {
    let files = source();
    let plan = Plan::new(&files, 256, None, None);
    let got: Vec<(usize, DType, u64, u64, Option<&str>)> =
        plan.runs.iter().map(|r| (r.file, r.dtype, r.offset, r.len, r.name)).collect();
    assert_eq!(
        got,
        vec![
            (0, DType::U8, 0, 80, None),
            (0, DType::BF16, 80, 1000, Some("w")),
            (0, DType::F32, 1080, 64, Some("b")),
            (1, DType::U8, 0, 300, None),
        ]
    );
    assert!(plan.runs.iter().all(|r| r.base.is_none() && !r.lossy));
    assert_eq!((0..4).map(|ri| plan.blocks(ri)).collect::<Vec<_>>(), vec![1, 4, 1, 2]);
}

#[test]
fn jobs_cover_each_file_in_order_in_block_sized_ranges() {
    let files = source();
    let plan = Plan::new(&files, 256, None, None);
    let jobs = plan.jobs(0);
    let ranges: Vec<(usize, usize, u64, u64)> = jobs.iter().map(|j| (j.run, j.index, j.offset, j.len)).collect();
    assert_eq!(
        ranges,
        vec![(0, 0, 0, 80), (1, 0, 80, 256), (1, 1, 336, 256), (1, 2, 592, 256), (1, 3, 848, 232), (2, 0, 1080, 64)]
    );
    // Contiguous, front to back, the whole file.
    for w in jobs.windows(2) {
        assert_eq!(w[0].offset + w[0].len, w[1].offset);
    }
    assert_eq!(jobs.last().map(|j| j.offset + j.len), Some(files[0].len));
    let blob: Vec<(u64, u64)> = plan.jobs(1).iter().map(|j| (j.offset, j.len)).collect();
    assert_eq!(blob, vec![(0, 256), (256, 44)]);
}

#[test]
fn blocks_keep_whole_elements() {
    // A 6-byte-aligned cut is impossible for F32: blocks end on 4 bytes.
    let files = vec![st("m.safetensors", 8, vec![tensor("x", DType::F32, 8, 40)])];
    let plan = Plan::new(&files, 10, None, None);
    for j in plan.jobs(0).iter().filter(|j| j.run == 1) {
        assert_eq!(j.len % 4, 0, "{j:?}");
    }
}

/// The base version of [`source`] as packed with block size 256 (blocks
/// named by number).
fn base_manifest() -> Manifest {
    let files = source();
    let plan = Plan::new(&files, 256, None, None);
    let hashes: Vec<Vec<Hash>> =
        (0..4).map(|ri| (0..plan.blocks(ri)).map(|i| Hash::of(&[ri as u8, i as u8])).collect()).collect();
    let json = serde_json::json!({
        "parent": null, "base": null, "created": 0, "author": "t", "message": "", "meta": {}, "metrics": {},
        "layout": "directory", "block_size": 256, "policy": "near:3",
        "files": serde_json::to_value(plan.files(&files, &hashes, crate::Algo::Xxh3)).unwrap(),
        "empty_dirs": [], "stats": {"raw_bytes": 0, "stored_bytes": 0, "new_blocks": 0, "reused_blocks": 0,
            "delta_blocks": 0, "max_depth": 0},
    });
    serde_json::from_value(json).unwrap()
}

#[test]
fn the_base_of_a_run_is_the_same_run_in_the_base_version() {
    let base = base_manifest();
    let h = |ri: u8, i: u8| Hash::of(&[ri, i]);
    // The tensor `w` moved to another file and the blob changed kind.
    let files = vec![
        st("other.safetensors", 40, vec![tensor("w", DType::BF16, 40, 1000)]),
        st("model.safetensors", 80, vec![tensor("b", DType::BF16, 80, 64)]),
        st("notes.txt", 16, vec![]),
    ];
    let plan = Plan::new(&files, 256, Some(&base), None);
    let bases: Vec<Option<Vec<Hash>>> = plan.runs.iter().map(|r| r.base.map(<[Hash]>::to_vec)).collect();
    assert_eq!(
        bases,
        vec![
            None,                                           // other.safetensors: no such file in the base
            Some(vec![h(1, 0), h(1, 1), h(1, 2), h(1, 3)]), // `w` by name, wherever it is
            Some(vec![h(0, 0)]),                            // the header of the same path
            None,                                           // `b` changed dtype: no base
            None,                                           // a blob in the base, safetensors now
        ]
    );
}

#[test]
fn lossy_marks_float_tensors_not_kept_exact() {
    let files = vec![st(
        "m.safetensors",
        16,
        vec![tensor("w", DType::BF16, 16, 64), tensor("norm", DType::F32, 80, 64), tensor("ids", DType::I32, 144, 64)],
    )];
    let l = LossyOptions { keep_exact: vec!["norm".into()], ..Default::default() };
    let plan = Plan::new(&files, 256, None, Some(&l));
    let marks: Vec<bool> = plan.runs.iter().map(|r| r.lossy).collect();
    assert_eq!(marks, vec![false, true, false, false]);
    assert!(Plan::new(&files, 256, None, None).runs.iter().all(|r| !r.lossy));
}

#[test]
fn files_are_rebuilt_from_the_runs_and_their_hashes() {
    let base = base_manifest();
    let files = source();
    assert_eq!(base.files.len(), 2);
    let m = &base.files[0];
    assert_eq!(m.path, "model.safetensors");
    assert_eq!(m.size, 1144);
    let t: Vec<(&str, u64, u64, usize)> =
        m.tensors().iter().map(|t| (t.name.as_str(), t.offset, t.len, t.blocks.len())).collect();
    assert_eq!(t, vec![("w", 80, 1000, 4), ("b", 1080, 64, 1)]);
    assert_eq!(m.tensors()[0].hash, Hash::of_hashes(&m.tensors()[0].blocks));
    assert_eq!(m.hash, Hash::of_hashes(&m.block_hashes()));
    assert_eq!(base.files[1].block_hashes(), vec![Hash::of(&[3, 0]), Hash::of(&[3, 1])]);
    assert_eq!(files[1].len, base.files[1].size);
}

#[test]
fn windows_cover_every_job_once_within_the_span() {
    let jobs: Vec<Job> = (0..10).map(|i| Job { run: 0, index: i, offset: i as u64 * 100, len: 100 }).collect();
    let w = windows(&jobs, 250);
    assert_eq!(w.iter().map(|w| w.len()).sum::<usize>(), 10);
    assert_eq!(w.len(), 5);
    for g in &w {
        let span = g[g.len() - 1].offset + g[g.len() - 1].len - g[0].offset;
        assert!(span <= 250);
    }
    // A block larger than the window gets a window of its own.
    let big = [Job { run: 0, index: 0, offset: 0, len: 1000 }, Job { run: 0, index: 1, offset: 1000, len: 10 }];
    assert_eq!(windows(&big, 250).len(), 2);
    assert!(windows(&[], 250).is_empty());
}

#[test]
fn a_worker_gets_its_buffers_back_and_fresh_ones_while_it_holds_them() {
    use super::{BufferPool, Held};
    let pool = BufferPool::new(1);
    {
        let mut held = pool.take();
        assert!(matches!(held, Held::Pooled(_)));
        held.get().bytes.resize(1 << 16, 7);
        // Taken again further up the same thread's stack: fresh buffers,
        // the pooled ones are not shared.
        let mut nested = pool.take();
        assert!(matches!(nested, Held::Fresh(_)));
        assert!(nested.get().bytes.is_empty());
    }
    // Released: the next piece of work reuses what the first one grew.
    let mut again = pool.take();
    assert!(matches!(again, Held::Pooled(_)));
    assert_eq!(again.get().bytes.len(), 1 << 16);
    assert!(again.get().bytes.capacity() >= 1 << 16);
}
