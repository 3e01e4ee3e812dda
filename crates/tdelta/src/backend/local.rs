//! [`LocalDir`]: a store in a local directory, today's files byte for byte.
//!
//! Every object is a file under the root, named by its object name (`/`
//! becomes the platform's separator). Writes go to a temporary file in
//! `tmp/`, are fsynced, renamed into place and the directory is fsynced,
//! so a reader sees an object whole or not at all. Ranged reads of an
//! object (packs) use one open `File` per object, kept open, with
//! positioned reads: no open or close per block. The lease is the `flock`
//! on `lock` (see `store::lock`).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{Backend, ETag, Lease, ObjectMeta, ObjectWriter, PutMode};
use crate::error::IoContext;
use crate::store::{fsutil, lock};
use crate::{Error, Result};

/// A store in a local directory (the default backend).
#[derive(Debug)]
pub struct LocalDir {
    root: PathBuf,
    /// Open files of objects read by range, by name.
    open: RwLock<HashMap<String, Arc<Reader>>>,
}

impl LocalDir {
    /// A backend over the directory `root` (which need not exist yet:
    /// writes create the folders they need).
    pub fn new(root: impl Into<PathBuf>) -> LocalDir {
        LocalDir { root: root.into(), open: RwLock::new(HashMap::new()) }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of object `name`.
    pub fn path_of(&self, name: &str) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(name.split('/').filter(|c| !c.is_empty()));
        p
    }

    fn tmp_dir(&self) -> Result<PathBuf> {
        let tmp = self.root.join("tmp");
        if !tmp.is_dir() {
            fs::create_dir_all(&tmp).at(&tmp)?;
        }
        Ok(tmp)
    }

    fn reader(&self, name: &str) -> Result<Arc<Reader>> {
        if let Some(r) = self.open.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Ok(Arc::clone(r));
        }
        let path = self.path_of(name);
        let file = File::open(&path).map_err(|e| not_found_or_io(&path, e))?;
        let r = Arc::new(Reader::new(file, path));
        let mut open = self.open.write().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(open.entry(name.to_string()).or_insert(r)))
    }

    fn forget(&self, name: &str) {
        self.open.write().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// Renames `tmp` to the file of `name` (creating its folders) and
    /// syncs the folder.
    fn land(&self, tmp: &Path, file: File, name: &str) -> Result<()> {
        let dest = self.path_of(name);
        if let Some(parent) = dest.parent()
            && !parent.is_dir()
        {
            fs::create_dir_all(parent).at(parent)?;
        }
        fsutil::commit_file(file, tmp, &dest)
    }
}

/// `NotFound` for a missing file (or a path through a file), else `Io`.
fn not_found_or_io(path: &Path, e: std::io::Error) -> Error {
    if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) {
        Error::NotFound { what: path.display().to_string() }
    } else {
        Error::io(path, e)
    }
}

/// The tag of a local object: a hash of its content.
fn tag_of(bytes: &[u8]) -> ETag {
    ETag(crate::Hash::of(bytes).to_hex())
}

/// An open file read at positions.
#[derive(Debug)]
struct Reader {
    path: PathBuf,
    /// The file opened for `O_DIRECT` reads, and mapped (never touched:
    /// only asked which pages the page cache holds, `mincore`), on first
    /// use; `None` when the file system refuses either.
    #[cfg(target_os = "linux")]
    direct: std::sync::OnceLock<Option<Direct>>,
    #[cfg(unix)]
    file: File,
    /// Without positioned reads, seek and read under a lock.
    #[cfg(not(unix))]
    file: std::sync::Mutex<File>,
}

impl Reader {
    fn new(file: File, path: PathBuf) -> Reader {
        #[cfg(target_os = "linux")]
        return Reader { path, file, direct: std::sync::OnceLock::new() };
        #[cfg(all(unix, not(target_os = "linux")))]
        return Reader { path, file };
        #[cfg(not(unix))]
        return Reader { path, file: std::sync::Mutex::new(file) };
    }

    /// The `O_DIRECT` handle and mapping of the file, opened on first use.
    #[cfg(target_os = "linux")]
    fn direct(&self) -> Option<&Direct> {
        self.direct.get_or_init(|| Direct::open(&self.path)).as_ref()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.file.read_exact_at(buf, offset)
        }
        #[cfg(not(unix))]
        {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            f.seek(SeekFrom::Start(offset))?;
            f.read_exact(buf)
        }
    }
}

/// A file's `O_DIRECT` handle and a mapping of it used only to ask the
/// page cache which of its pages it holds (`mincore`): its memory is never
/// read, so a file cut short under it cannot fault.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct Direct {
    file: File,
    map: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is never dereferenced, only passed to `mincore` and
// `munmap`, which any thread may call.
#[cfg(target_os = "linux")]
unsafe impl Send for Direct {}
// SAFETY: as for `Send`.
#[cfg(target_os = "linux")]
unsafe impl Sync for Direct {}

#[cfg(target_os = "linux")]
impl Direct {
    fn open(path: &Path) -> Option<Direct> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let file = fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).ok()?;
        let len = usize::try_from(file.metadata().ok()?.len()).ok().filter(|&l| l > 0)?;
        // SAFETY: a fresh read-only shared mapping of an open file; it is
        // only handed to `mincore` and unmapped on drop.
        let map =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        (map != libc::MAP_FAILED).then_some(Direct { file, map, len })
    }

    /// Reads at `offset` into `buf` around the page cache (both aligned);
    /// the bytes read, fewer at the file's end; `None` on any error.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Option<usize> {
        use std::os::unix::fs::FileExt;
        let mut got = 0;
        while got < buf.len() {
            match self.file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        Some(got)
    }

    /// Whether the page cache holds every page of `len` bytes at `offset`.
    fn cached(&self, offset: u64, len: usize) -> bool {
        const PAGE: usize = 4096;
        let Ok(start) = usize::try_from(offset) else { return false };
        let end = start.saturating_add(len).min(self.len);
        if start >= end {
            return false;
        }
        let first = start / PAGE * PAGE;
        let pages = (end - first).div_ceil(PAGE);
        let mut vec = vec![0u8; pages];
        // SAFETY: the range lies inside the mapping (`end <= self.len`), its
        // start is page-aligned, and `vec` has one byte per page.
        let r = unsafe { libc::mincore(self.map.cast::<u8>().add(first).cast(), end - first, vec.as_mut_ptr()) };
        r == 0 && vec.iter().all(|&v| v & 1 == 1)
    }
}

#[cfg(target_os = "linux")]
impl Drop for Direct {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once.
        unsafe { libc::munmap(self.map, self.len) };
    }
}

impl Backend for LocalDir {
    fn describe(&self) -> String {
        format!("local {}", self.root.display())
    }

    fn locate(&self, name: &str) -> PathBuf {
        self.path_of(name)
    }

    fn get(&self, name: &str, cap: u64) -> Result<(Vec<u8>, ETag)> {
        let path = self.path_of(name);
        let meta = fs::metadata(&path).map_err(|e| not_found_or_io(&path, e))?;
        if meta.is_dir() {
            return Err(Error::NotFound { what: path.display().to_string() });
        }
        if meta.len() > cap {
            return Err(Error::corrupt(&path, format!("file is {} bytes, more than the {cap} allowed", meta.len())));
        }
        let bytes = fs::read(&path).map_err(|e| not_found_or_io(&path, e))?;
        let tag = tag_of(&bytes);
        Ok((bytes, tag))
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        let r = self.reader(name)?;
        r.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt(&r.path, format!("{} bytes at offset {offset} lie past its end", buf.len()))
            } else {
                Error::io(&r.path, e)
            }
        })
    }

    fn cached(&self, name: &str, offset: u64, len: u64) -> Option<bool> {
        #[cfg(target_os = "linux")]
        if let Ok(r) = self.reader(name)
            && let Some(d) = r.direct()
        {
            return Some(d.cached(offset, usize::try_from(len).ok()?));
        }
        let _ = (name, offset, len);
        None
    }

    fn read_direct(&self, name: &str, offset: u64, buf: &mut [u8]) -> Option<usize> {
        #[cfg(target_os = "linux")]
        if let Ok(r) = self.reader(name)
            && let Some(d) = r.direct()
        {
            return d.read(offset, buf);
        }
        let _ = (name, offset, buf);
        None
    }

    fn will_need(&self, name: &str, ranges: &[(u64, u64)]) {
        #[cfg(target_os = "linux")]
        if let Ok(r) = self.reader(name) {
            use std::os::fd::AsRawFd;
            for &(offset, len) in ranges {
                let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
                    continue;
                };
                // SAFETY: a valid open descriptor; the call only starts
                // read-ahead of the range and touches no memory of ours.
                let _ = unsafe { libc::posix_fadvise(r.file.as_raw_fd(), off, len, libc::POSIX_FADV_WILLNEED) };
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (name, ranges);
    }

    fn head(&self, name: &str) -> Result<ObjectMeta> {
        let path = self.path_of(name);
        let meta = fs::metadata(&path).map_err(|e| not_found_or_io(&path, e))?;
        if meta.is_dir() {
            return Err(Error::NotFound { what: path.display().to_string() });
        }
        let modified =
            meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs());
        Ok(ObjectMeta { name: name.to_string(), size: meta.len(), modified })
    }

    fn put(&self, name: &str, bytes: &[u8], mode: PutMode) -> Result<ETag> {
        let dest = self.path_of(name);
        // One writer holds the lease: the check and the rename do not race
        // with another writer of the same store.
        match &mode {
            PutMode::Create if dest.exists() => {
                return Err(Error::AlreadyExists { what: dest.display().to_string() });
            }
            PutMode::IfMatch(expected) => {
                let current = match self.get(name, u64::MAX) {
                    Ok((_, t)) => Some(t),
                    Err(Error::NotFound { .. }) => None,
                    Err(e) => return Err(e),
                };
                if &current != expected {
                    return Err(Error::Conflict {
                        what: dest.display().to_string(),
                        reason: format!("expected {}, found {}", show_tag(expected), show_tag(&current)),
                    });
                }
            }
            _ => {}
        }
        let (tmp, mut f) = fsutil::temp_file(&self.tmp_dir()?, "write")?;
        let landed = f.write_all(bytes).at(&tmp).and_then(|()| self.land(&tmp, f, name));
        if let Err(e) = landed {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.forget(name);
        Ok(tag_of(bytes))
    }

    fn writer(&self) -> Result<Box<dyn ObjectWriter>> {
        let (tmp, file) = fsutil::temp_file(&self.tmp_dir()?, "pack")?;
        Ok(Box::new(LocalWriter {
            root: self.root.clone(),
            tmp,
            out: BufWriter::with_capacity(1 << 20, file),
            pos: 0,
            kicked: 0,
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // Walk the deepest folder the prefix names.
        let dir_part = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        let start = self.path_of(dir_part);
        let mut out = Vec::new();
        let mut stack = vec![(start, dir_part.to_string())];
        while let Some((dir, name)) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
                    continue;
                }
                Err(e) => return Err(Error::io(&dir, e)),
            };
            for ent in rd {
                let ent = ent.at(&dir)?;
                let Some(file_name) = ent.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let full = if name.is_empty() { file_name } else { format!("{name}/{file_name}") };
                let p = ent.path();
                let meta = ent.metadata().at(&p)?;
                if meta.is_dir() {
                    if prefix.starts_with(&format!("{full}/")) || full.starts_with(prefix) {
                        stack.push((p, full));
                    }
                } else if full.starts_with(prefix) {
                    let modified = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs());
                    out.push(ObjectMeta { name: full, size: meta.len(), modified });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.forget(name);
        let path = self.path_of(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&path, e)),
        }
        if let Some(parent) = path.parent() {
            fsutil::sync_dir(parent)?;
        }
        // Folders the object leaves empty go too (below the top folder:
        // `refs/a/b` removes `refs/a` when empty, never `refs`), so that
        // their names are free again.
        let top = name.split('/').next().map(|t| self.path_of(t));
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| Some(*d) != top.as_deref() && d.starts_with(&self.root) && *d != self.root) {
            if fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    fn lease(&self, wait: Duration, notice: Option<&dyn Fn(&str)>) -> Result<Box<dyn Lease>> {
        if !self.root.is_dir() {
            fs::create_dir_all(&self.root).at(&self.root)?;
        }
        let (l, _) = lock::acquire_noting(&self.root.join("lock"), wait, notice)?;
        // Only the lease holder writes to `tmp/`: what is there was left by
        // writers that died.
        let tmp = self.tmp_dir()?;
        for ent in fs::read_dir(&tmp).at(&tmp)? {
            let _ = fs::remove_file(ent.at(&tmp)?.path());
        }
        Ok(Box::new(LocalLease { _lock: l, holder: format!("pid {}", std::process::id()) }))
    }
}

fn show_tag(t: &Option<ETag>) -> String {
    t.as_ref().map_or_else(|| "no object".to_string(), |t| format!("tag {}", t.0))
}

#[derive(Debug)]
struct LocalLease {
    /// Held for its `Drop`, which releases the lock.
    _lock: lock::WriteLock,
    holder: String,
}

impl Lease for LocalLease {
    fn holder(&self) -> String {
        self.holder.clone()
    }
}

/// A streamed object: a temporary file in `tmp/`, written back while it
/// grows, fsynced and renamed into place by `finish`.
struct LocalWriter {
    root: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    pos: u64,
    /// Bytes handed to the kernel for write-back so far.
    kicked: u64,
}

impl ObjectWriter for LocalWriter {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).at(&self.tmp)?;
        self.pos += bytes.len() as u64;
        // Let the disk work while the next bytes are produced: the final
        // fsync then has little left to wait for.
        let in_kernel = self.pos - self.out.buffer().len() as u64;
        if in_kernel - self.kicked >= 8 << 20 {
            fsutil::start_writeback(self.out.get_ref(), self.kicked, in_kernel - self.kicked);
            self.kicked = in_kernel;
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.pos
    }

    fn finish(self: Box<Self>, name: &str) -> Result<()> {
        let LocalWriter { root, tmp, out, .. } = *self;
        let dir = LocalDir::new(root);
        let dest = dir.path_of(name);
        let landed = if dest.exists() {
            Err(Error::AlreadyExists { what: dest.display().to_string() })
        } else {
            match out.into_inner() {
                Ok(file) => dir.land(&tmp, file, name),
                Err(e) => Err(Error::io(&tmp, e.into_error())),
            }
        };
        if landed.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        landed
    }

    fn abort(self: Box<Self>) {
        let LocalWriter { tmp, out, .. } = *self;
        drop(out);
        let _ = fs::remove_file(&tmp);
    }
}
