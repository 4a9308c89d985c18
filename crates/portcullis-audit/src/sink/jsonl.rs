//! The JSONL storage: one record per line in `audit-NNNNNNNN.jsonl` files.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use crate::chain::{ChainHead, Decoded, decode};
use crate::verify::{Verifier, Violation};
use crate::{Appended, AuditError, AuditStorage, Batch, Visit};

/// Options of the JSONL backend.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JsonlOptions {
    /// Start a new file once the current one reaches this size. Default 64 MiB.
    pub max_file_bytes: u64,
}

/// Setters, so that options built outside this crate keep compiling as fields are added
/// (the struct is `#[non_exhaustive]`): `JsonlOptions::default().with_…(…)`.
impl JsonlOptions {
    /// Sets [`max_file_bytes`](Self::max_file_bytes).
    #[must_use]
    pub fn with_max_file_bytes(mut self, max_file_bytes: u64) -> Self {
        self.max_file_bytes = max_file_bytes;
        self
    }
}

impl Default for JsonlOptions {
    fn default() -> Self {
        JsonlOptions {
            max_file_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug)]
struct State {
    /// Held open with an exclusive lock for as long as the log is open: a second writer (in
    /// this process or another) would fork the chain. The kernel drops it if we die.
    _lock: File,
    file: File,
    path: PathBuf,
    index: u32,
    len: u64,
    head: ChainHead,
    /// Set when a failed write could not be undone: the file's end is unknown.
    poisoned: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct JsonlBackend {
    dir: PathBuf,
    options: JsonlOptions,
    state: Arc<Mutex<State>>,
}

fn file_name(index: u32) -> String {
    format!("audit-{index:08}.jsonl")
}

/// The numbered log files in `dir`, in order.
pub(crate) fn log_files(dir: &Path) -> Result<Vec<(u32, PathBuf)>, AuditError> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| AuditError::io(dir.display(), e))? {
        let entry = entry.map_err(|e| AuditError::io(dir.display(), e))?;
        let name = entry.file_name();
        let Some(index) = name
            .to_str()
            .and_then(|n| n.strip_prefix("audit-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        files.push((index, entry.path()));
    }
    files.sort();
    Ok(files)
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(dir.display(), e))
}

/// The end of one log file, read backwards from its end: its last complete lines and where
/// the last one ends.
#[derive(Debug)]
pub(crate) struct FileTail {
    /// Up to the number asked for of the file's last newline-terminated lines (without the
    /// newline), in file order.
    pub(crate) lines: Vec<Vec<u8>>,
    /// The length up to and including the last newline. Bytes after it are not a record: a
    /// write torn by a crash, cut when the log is opened.
    pub(crate) end: u64,
    /// The file's size.
    pub(crate) size: u64,
    /// Whether `lines` are all the file's lines (it has no earlier ones).
    pub(crate) whole: bool,
}

/// How much [`read_tail`] reads at a time.
pub(crate) const TAIL_BLOCK: u64 = 64 * 1024;

/// Reads the last `want` complete lines of `path` (fewer if it has fewer), from its end
/// backwards, `block` bytes at a time ([`TAIL_BLOCK`]): opening a large log reads its tail,
/// not the whole file.
pub(crate) fn read_tail(path: &Path, want: usize, block: u64) -> Result<FileTail, AuditError> {
    use std::io::{Seek, SeekFrom};
    let io = |e| AuditError::io(path.display(), e);
    let mut file = File::open(path).map_err(io)?;
    // Read exactly the length the file has now: a file growing under us (or a device) must
    // not make this read forever.
    let size = file.metadata().map_err(io)?.len();
    let mut blocks = Vec::new();
    let mut newlines = 0usize;
    let mut from = size;
    // Enough once the block holding the newline before the first wanted line is read:
    // `want` lines need `want + 1` newlines, unless the file starts first.
    while from > 0 && newlines <= want {
        let start = from.saturating_sub(block.max(1));
        let mut block = Vec::new();
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        (&mut file)
            .take(from - start)
            .read_to_end(&mut block)
            .map_err(io)?;
        newlines += memchr::memchr_iter(b'\n', &block).count();
        blocks.push(block);
        from = start;
    }
    let bytes: Vec<u8> = blocks.into_iter().rev().flatten().collect();
    let Some(last) = memchr::memrchr(b'\n', &bytes) else {
        // No newline: no complete line, and the read went back to the start of the file.
        return Ok(FileTail {
            lines: Vec::new(),
            end: 0,
            size,
            whole: true,
        });
    };
    let end = from + u64::try_from(last + 1).unwrap_or(u64::MAX);
    let body = bytes.get(..last).unwrap_or_default();
    let mut lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    if from > 0 {
        // Its start is in a block not read: not a whole line.
        lines.remove(0);
    }
    let whole = from == 0 && lines.len() <= want;
    let skip = lines.len().saturating_sub(want);
    Ok(FileTail {
        lines: lines.into_iter().skip(skip).map(<[u8]>::to_vec).collect(),
        end,
        size,
        whole,
    })
}

/// Checks the newest records of a log before it is appended to, and returns its head and the
/// length of its newest file up to its last complete record.
///
/// Reads the last `window` records (and the one before them, whose hash they link to)
/// backwards from the newest file, across files where the newest holds fewer. Each must
/// verify as [`verify_jsonl_dir`] would check it: its hash matches its content, its
/// sequence number and `prev` follow the record before it; a window that reaches the log's
/// first record checks that it is record 1, linked to nothing. Anything else is
/// [`AuditError::HeadNotVerified`], and nothing is changed.
///
/// Only then is a torn tail cut: a batch is one `write` of newline-terminated lines, so a
/// crash can only leave a partial line after the last newline, and that, and only that, is
/// cut (in the newest file, or the files back to the one holding the last record). A
/// complete record that does not verify is not a tear but tampering (or corruption): the
/// evidence stays as it is, rather than being deleted and written over from an earlier head.
fn open_tail(files: &[(u32, PathBuf)], window: usize) -> Result<(ChainHead, u64), AuditError> {
    let want = window.max(1).saturating_add(1);
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut torn = Vec::new();
    let mut newest_len = 0;
    let mut from_first = true;
    for (i, (_, path)) in files.iter().enumerate().rev() {
        let tail = read_tail(path, want - lines.len(), TAIL_BLOCK)?;
        if i + 1 == files.len() {
            newest_len = tail.end;
        }
        // The files after the last record are empty (just rotated) or torn.
        if lines.is_empty() && tail.end != tail.size {
            torn.push((path, tail.end));
        }
        let whole = tail.whole;
        lines.splice(0..0, tail.lines);
        if lines.len() == want || !whole {
            from_first = i == 0 && whole;
            break;
        }
    }
    let mut verifier = if from_first {
        Verifier::new()
    } else {
        let before = lines
            .first()
            .and_then(|line| claimed_seq(line))
            .map_or(0, |seq| seq.saturating_sub(1));
        Verifier::resuming(before, &[])
    };
    for line in &lines {
        verifier.feed(line).map_err(AuditError::HeadNotVerified)?;
    }
    for (path, len) in torn {
        tracing::warn!(target: "portcullis_audit", file = %path.display(), "cutting a torn record at the end of the log");
        let io = |e| AuditError::io(path.display(), e);
        let file = OpenOptions::new().write(true).open(path).map_err(io)?;
        file.set_len(len).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    Ok((verifier.head(), newest_len))
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| AuditError::io(path.display(), e))
}

/// How long opening waits for the folder lock before concluding another writer holds it.
///
/// The lock is an open file description's: a child process forked by *any* thread of this
/// process shares it until the child execs (or exits), even though Rust opens every file
/// close-on-exec. A log closed and reopened while something else spawns a process can find
/// its own old lock still held for that moment; a real second writer holds it far longer.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes the exclusive lock on the folder's `audit.lock`, retrying for up to [`LOCK_WAIT`].
fn lock_folder(lock: &File, lock_path: &Path, dir: &Path) -> Result<(), AuditError> {
    let started = std::time::Instant::now();
    loop {
        match fs4::FileExt::try_lock(lock) {
            Ok(()) => return Ok(()),
            Err(fs4::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(fs4::TryLockError::WouldBlock) => {
                return Err(AuditError::Invalid(format!(
                    "{} is already open for writing by another AuditLog (this or another process); \
                     one writer per folder keeps one chain",
                    dir.display()
                )));
            }
            Err(fs4::TryLockError::Error(e)) => {
                return Err(AuditError::io(lock_path.display(), e));
            }
        }
    }
}

impl JsonlBackend {
    /// Opens the folder for appending, once its newest `verify_on_open` records verify
    /// ([`open_tail`]).
    pub(crate) async fn open(
        dir: PathBuf,
        options: JsonlOptions,
        verify_on_open: usize,
    ) -> Result<Self, AuditError> {
        let opened = dir.clone();
        let state = tokio::task::spawn_blocking(move || -> Result<State, AuditError> {
            fs::create_dir_all(&opened).map_err(|e| AuditError::io(opened.display(), e))?;
            let lock_path = opened.join("audit.lock");
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| AuditError::io(lock_path.display(), e))?;
            lock_folder(&lock, &lock_path, &opened)?;
            let files = log_files(&opened)?;
            let (head, len) = open_tail(&files, verify_on_open)?;
            let last = (files.last().map_or(1, |(index, _)| *index), len);
            let path = opened.join(file_name(last.0));
            let file = open_append(&path)?;
            if files.is_empty() {
                sync_dir(&opened)?;
            }
            Ok(State {
                _lock: lock,
                file,
                path,
                index: last.0,
                len: last.1,
                head,
                poisoned: None,
            })
        })
        .await
        .map_err(|e| AuditError::Invalid(e.to_string()))??;
        Ok(JsonlBackend {
            dir,
            options,
            state: Arc::new(Mutex::new(state)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change to the state happens after its I/O succeeded or was undone, so a
        // panic elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why appends are refused, if an earlier write could not be undone.
    fn poisoned_reason(&self) -> Option<String> {
        self.lock().poisoned.clone()
    }

    fn append_blocking(&self, batch: &Batch) -> Result<Appended, AuditError> {
        let mut state = self.lock();
        if let Some(reason) = &state.poisoned {
            return Err(AuditError::Poisoned(reason.clone()));
        }
        let sealed = batch.seal(state.head)?;
        let head = sealed.head();
        let mut buffer = String::with_capacity(sealed.records().map(|r| r.line().len() + 1).sum());
        for record in sealed.records() {
            buffer.push_str(record.line());
            buffer.push('\n');
        }
        let written = state
            .file
            .write_all(buffer.as_bytes())
            .and_then(|()| state.file.sync_data());
        if let Err(err) = written {
            // Undo whatever part of the batch reached the file, so the chain never holds a
            // record nobody was told about... or if that fails too, refuse further writes.
            let len = state.len;
            let undone = state
                .file
                .set_len(len)
                .and_then(|()| state.file.sync_data());
            if let Err(undo) = undone {
                state.poisoned = Some(format!(
                    "write failed ({err}) and could not be undone ({undo})"
                ));
            }
            return Err(AuditError::io(state.path.display(), err));
        }
        state.len += u64::try_from(buffer.len()).unwrap_or(u64::MAX);
        state.head = head;
        if state.len >= self.options.max_file_bytes
            && let Err(err) = self.rotate(&mut state)
        {
            tracing::warn!(target: "portcullis_audit", error = %err, "could not rotate the audit log; still writing to the current file");
        }
        Ok(sealed.into())
    }

    fn rotate(&self, state: &mut State) -> Result<(), AuditError> {
        let index = state.index + 1;
        let path = self.dir.join(file_name(index));
        let file = open_append(&path)?;
        sync_dir(&self.dir)?;
        state.file = file;
        state.path = path;
        state.index = index;
        state.len = 0;
        Ok(())
    }

    /// Calls `f` on every stored record line that may come after `after_seq`, in order,
    /// until it returns `false`: from the file holding the record after `after_seq`
    /// ([`files_after`]), and past that file's earlier lines without decoding them.
    fn for_each_line_after(
        &self,
        after_seq: u64,
        mut f: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), AuditError> {
        let mut reached = after_seq == 0;
        for_each_complete_line(files_after(&self.dir, after_seq)?, |line| {
            if !reached {
                match claimed_seq(line) {
                    Some(seq) if seq <= after_seq => return true,
                    Some(_) => reached = true,
                    // Not as `seal` writes lines: let the caller decode (and judge) it.
                    None => {}
                }
            }
            f(line)
        })
    }

    /// Decodes the records after `after_seq` whose line contains one of `needles` (all of
    /// them when there are none), on a blocking thread, and sends them in chunks until the
    /// receiver is dropped or the log ends. A read or decode error is sent, and ends the
    /// reading.
    fn spawn_reader(
        &self,
        after_seq: u64,
        needles: Vec<Vec<u8>>,
    ) -> tokio::sync::mpsc::Receiver<Result<Vec<Decoded>, AuditError>> {
        const CHUNK: usize = 256;
        let (chunks, receiver) = tokio::sync::mpsc::channel(4);
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            // Only a filter to skip lines: should it not build, every line is decoded.
            let finder = (!needles.is_empty())
                .then(|| aho_corasick::AhoCorasick::new(&needles).ok())
                .flatten();
            let mut chunk = Vec::with_capacity(CHUNK);
            let mut failed = None;
            let read = this.for_each_line_after(after_seq, |line| {
                if finder.as_ref().is_some_and(|f| !f.is_match(line)) {
                    return true;
                }
                match decode(line) {
                    Ok(decoded) if decoded.seq <= after_seq => true,
                    Ok(decoded) => {
                        chunk.push(decoded);
                        chunk.len() < CHUNK
                            || chunks
                                .blocking_send(Ok(std::mem::replace(
                                    &mut chunk,
                                    Vec::with_capacity(CHUNK),
                                )))
                                .is_ok()
                    }
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            });
            let last = match (read, failed) {
                (Err(e), _) | (Ok(()), Some(e)) => Err(e),
                (Ok(()), None) => Ok(chunk),
            };
            // The receiver may be gone: the caller has what it wanted.
            let _ = chunks.blocking_send(last);
        });
        receiver
    }

    /// Feeds the decoded records from [`spawn_reader`](Self::spawn_reader) to `visit`
    /// until it returns false.
    async fn visit_read(
        mut chunks: tokio::sync::mpsc::Receiver<Result<Vec<Decoded>, AuditError>>,
        visit: &mut Visit<'_>,
    ) -> Result<(), AuditError> {
        while let Some(chunk) = chunks.recv().await {
            for decoded in chunk? {
                if !visit(decoded)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// The sequence number a stored line claims, read from its end (`…,"seq":N,"v":1}`, as
/// `seal` writes it) without parsing the line. Used only to skip lines that come before
/// a reader's starting point; every line a reader returns is decoded in full.
fn claimed_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_suffix(b",\"v\":1}")?;
    let start = memchr::memmem::rfind(rest, b",\"seq\":")? + b",\"seq\":".len();
    let digits = rest.get(start..)?;
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The sequence number of the first complete record line of `path`, if it has one that
/// says so ([`claimed_seq`]).
fn first_seq(path: &Path) -> Result<Option<u64>, AuditError> {
    let file = File::open(path).map_err(|e| AuditError::io(path.display(), e))?;
    let mut first = Vec::new();
    BufReader::new(file)
        .read_until(b'\n', &mut first)
        .map_err(|e| AuditError::io(path.display(), e))?;
    Ok(first.strip_suffix(b"\n").and_then(claimed_seq))
}

/// The log files of `dir` that can hold records after `after_seq`, in order: from the
/// newest file whose first record is at most `after_seq + 1` (files hold consecutive
/// records, so every earlier file ends at or before `after_seq`). Walks back from the
/// newest file, reading one line of each, so a reader of the log's tail does not read the
/// whole log. A file whose first line says nothing (empty, just rotated, or not as `seal`
/// writes it) is not a reason to skip anything before it.
fn files_after(dir: &Path, after_seq: u64) -> Result<Vec<PathBuf>, AuditError> {
    let mut files: Vec<PathBuf> = log_files(dir)?.into_iter().map(|(_, path)| path).collect();
    if after_seq == 0 {
        return Ok(files);
    }
    let mut start = 0;
    for (i, path) in files.iter().enumerate().rev() {
        if first_seq(path)?.is_some_and(|first| first <= after_seq.saturating_add(1)) {
            start = i;
            break;
        }
    }
    Ok(files.split_off(start))
}

#[async_trait]
impl AuditStorage for JsonlBackend {
    async fn append(&self, batch: &Batch) -> Result<Appended, AuditError> {
        let (this, batch) = (self.clone(), batch.clone());
        tokio::task::spawn_blocking(move || this.append_blocking(&batch))
            .await
            .map_err(|e| AuditError::Poisoned(format!("the writer thread failed: {e}")))?
    }

    /// Appended and fsync'd per batch.
    fn is_durable(&self) -> bool {
        true
    }

    fn poisoned(&self) -> Option<String> {
        self.poisoned_reason()
    }

    async fn head(&self) -> Result<ChainHead, AuditError> {
        Ok(self.lock().head)
    }

    async fn scan(&self, after_seq: u64, limit: usize) -> Result<Vec<String>, AuditError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut error = None;
            this.for_each_line_after(after_seq, |line| match decode(line) {
                Ok(d) if d.seq > after_seq => {
                    out.push(String::from_utf8_lossy(line).into_owned());
                    out.len() < limit
                }
                Ok(_) => true,
                Err(e) => {
                    error = Some(e);
                    false
                }
            })?;
            match error {
                Some(e) => Err(e),
                None => Ok(out),
            }
        })
        .await
        .map_err(|e| AuditError::Invalid(e.to_string()))?
    }

    /// One pass over the files, from the one holding `after_seq + 1`: the default pages
    /// through [`scan`](AuditStorage::scan), and each page would read the log from its start.
    async fn for_each_decoded(
        &self,
        after_seq: u64,
        visit: &mut Visit<'_>,
    ) -> Result<(), AuditError> {
        Self::visit_read(self.spawn_reader(after_seq, Vec::new()), visit).await
    }

    /// Lines holding none of `needles` are skipped by a byte search (Aho-Corasick), not
    /// parsed.
    async fn for_each_decoded_containing(
        &self,
        after_seq: u64,
        needles: &[Vec<u8>],
        visit: &mut Visit<'_>,
    ) -> Result<(), AuditError> {
        Self::visit_read(self.spawn_reader(after_seq, needles.to_vec()), visit).await
    }

    async fn verify(
        &self,
        after_seq: u64,
        mut verifier: Verifier,
    ) -> Result<Result<Verifier, Violation>, AuditError> {
        let dir = self.dir.clone();
        if after_seq == 0 {
            return tokio::task::spawn_blocking(move || verify_jsonl_dir(&dir, verifier))
                .await
                .map_err(|e| AuditError::Invalid(e.to_string()))?;
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut started = false;
            let mut violation = None;
            this.for_each_line_after(after_seq, |line| {
                // A line whose seq was not read from its end (not as `seal` writes it) may
                // still come before the start: decode it to know.
                if !started {
                    match decode(line) {
                        Ok(decoded) if decoded.seq <= after_seq => return true,
                        _ => started = true,
                    }
                }
                match verifier.feed(line) {
                    Ok(()) => true,
                    Err(v) => {
                        violation = Some(v);
                        false
                    }
                }
            })?;
            Ok(match violation {
                Some(v) => Err(v),
                None => Ok(verifier),
            })
        })
        .await
        .map_err(|e| AuditError::Invalid(e.to_string()))?
    }
}

/// Calls `f` on every newline-terminated line of `files`, in order, until it returns
/// `false`. Bytes after a file's last newline are not a record yet: a live writer may be in
/// the middle of appending them (and a crash leaves them to be cut on the next open), so
/// they are neither counted nor reported as tampering.
fn for_each_complete_line(
    files: impl IntoIterator<Item = PathBuf>,
    mut f: impl FnMut(&[u8]) -> bool,
) -> Result<(), AuditError> {
    let mut line = Vec::new();
    for path in files {
        let file = File::open(&path).map_err(|e| AuditError::io(path.display(), e))?;
        let mut reader = BufReader::new(file);
        loop {
            line.clear();
            reader
                .read_until(b'\n', &mut line)
                .map_err(|e| AuditError::io(path.display(), e))?;
            let Some(record) = line.strip_suffix(b"\n") else {
                break;
            };
            if !f(record) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Reads and verifies a JSONL log folder (or one file) without opening it for writing, so it
/// can run beside a live writer (the CLI uses it).
///
/// # Errors
///
/// A read failure.
pub fn verify_jsonl_dir(
    dir: &Path,
    mut verifier: Verifier,
) -> Result<Result<Verifier, Violation>, AuditError> {
    let files = if dir.is_dir() {
        log_files(dir)?.into_iter().map(|(_, p)| p).collect()
    } else {
        vec![dir.to_path_buf()]
    };
    let mut violation = None;
    for_each_complete_line(files, |line| match verifier.feed(line) {
        Ok(()) => true,
        Err(v) => {
            violation = Some(v);
            false
        }
    })?;
    Ok(match violation {
        Some(v) => Err(v),
        None => Ok(verifier),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::seal;

    /// Lines as `seal` writes them, for records `first..=last` of one chain.
    fn lines(first: u64, last: u64) -> String {
        let mut head = ChainHead {
            seq: first - 1,
            ..ChainHead::EMPTY
        };
        let mut text = String::new();
        for seq in first..=last {
            let sealed = seal(&head, format!("id-{seq}"), r#"{"n":1,"seq":7,"v":1}"#);
            text.push_str(&sealed.line);
            text.push('\n');
            head = sealed.head;
        }
        text
    }

    #[test]
    fn claimed_seq_reads_what_seal_wrote_and_nothing_else() {
        for seq in [1, 9, 10, 12_345, u64::MAX - 1] {
            let head = ChainHead {
                seq: seq - 1,
                ..ChainHead::EMPTY
            };
            // An event that itself ends like a record does not fool it.
            let sealed = seal(&head, "id".into(), r#"{"x":",\"seq\":3,\"v\":1}"}"#);
            assert_eq!(claimed_seq(sealed.line.as_bytes()), Some(seq));
            assert_eq!(decode(sealed.line.as_bytes()).unwrap().seq, seq);
        }
        for line in [
            "",
            r#"{"seq":5,"v":1}"#,
            r#"{"a":1,"seq":,"v":1}"#,
            r#"{"a":1,"seq":-5,"v":1}"#,
            r#"{"a":1,"seq":5 ,"v":1}"#,
            r#"{"a":1,"seq":5,"v":2}"#,
            r#"{"a":1,"seq":5,"v":1} "#,
            r#"{"a":1,"seq":99999999999999999999999,"v":1}"#,
        ] {
            assert_eq!(claimed_seq(line.as_bytes()), None, "{line}");
        }
    }

    proptest::proptest! {
        /// Any bytes: no panic, and a claimed seq is exactly the number the line ends with.
        /// Any sealed record: the claimed seq is the one `decode` reads.
        #[test]
        fn claimed_seq_agrees_with_decode(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            text in ".{0,40}",
            seq in 1..u64::MAX,
        ) {
            if let Some(claimed) = claimed_seq(&bytes) {
                let tail = format!(",\"seq\":{claimed},\"v\":1}}");
                proptest::prop_assert!(bytes.ends_with(tail.as_bytes()));
            }
            let event = serde_json::json!({ "text": text }).to_string();
            let head = ChainHead { seq: seq - 1, ..ChainHead::EMPTY };
            let line = seal(&head, "id".into(), &event).line;
            proptest::prop_assert_eq!(claimed_seq(line.as_bytes()), Some(seq));
            proptest::prop_assert_eq!(decode(line.as_bytes()).map(|d| d.seq).ok(), Some(seq));
        }
    }

    proptest::proptest! {
        /// Read backwards in blocks of any size, a file's tail is what splitting it forwards
        /// gives: its last complete lines, where the last one ends, whether that is all.
        #[test]
        fn read_tail_reads_what_a_forward_split_does(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![proptest::strategy::Just(b'\n'), proptest::num::u8::ANY],
                0..200,
            ),
            want in 1..12usize,
            block in 1..40u64,
        ) {
            let dir = std::env::temp_dir()
                .join(format!("portcullis-read-tail-{}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{want}-{block}-{}.jsonl", bytes.len()));
            fs::write(&path, &bytes).unwrap();
            let tail = read_tail(&path, want, block).unwrap();
            fs::remove_file(&path).unwrap();
            let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let all: Vec<&[u8]> = match end {
                0 => Vec::new(),
                _ => bytes[..end - 1].split(|b| *b == b'\n').collect(),
            };
            let last = &all[all.len().saturating_sub(want)..];
            proptest::prop_assert_eq!(&tail.lines, &last.iter().map(|l| l.to_vec()).collect::<Vec<_>>());
            proptest::prop_assert_eq!(tail.end, end as u64);
            proptest::prop_assert_eq!(tail.size, bytes.len() as u64);
            proptest::prop_assert_eq!(tail.whole, all.len() <= want);
        }
    }

    /// Opening checks the newest records across files; only a torn line is cut, and only
    /// once the records before it verify.
    #[test]
    fn open_tail_reads_back_across_files_and_cuts_only_a_tear() {
        let mut head = ChainHead::EMPTY;
        let chain: Vec<String> = (1..=5)
            .map(|n| {
                let sealed = seal(&head, format!("id-{n}"), &format!("{{\"n\":{n}}}"));
                head = sealed.head;
                sealed.line + "\n"
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("portcullis-open-tail-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(file_name(1)), chain[..3].concat()).unwrap();
        fs::write(dir.join(file_name(2)), chain[3..].concat()).unwrap();
        fs::write(dir.join(file_name(3)), "{\"torn").unwrap();
        let files = log_files(&dir).unwrap();
        for window in [1, 2, 4, 5, 100] {
            assert_eq!(
                open_tail(&files, window).unwrap(),
                (head, 0),
                "window {window}"
            );
        }
        assert_eq!(fs::read(dir.join(file_name(3))).unwrap(), b"");
        // Record 3 changed: found by a window reaching it (as the anchor of 2 or more),
        // and nothing is cut then.
        let altered = chain[..3].concat().replace("{\"n\":3}", "{\"n\":9}");
        fs::write(dir.join(file_name(1)), altered).unwrap();
        fs::write(dir.join(file_name(3)), "{\"torn").unwrap();
        for window in [2, 3, 100] {
            let err = open_tail(&files, window).unwrap_err();
            assert!(
                matches!(
                    err,
                    AuditError::HeadNotVerified(Violation::Altered { seq: 3 })
                ),
                "window {window}: {err}"
            );
        }
        assert_eq!(fs::read(dir.join(file_name(3))).unwrap(), b"{\"torn");
        assert_eq!(open_tail(&files, 1).unwrap(), (head, 0));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_after_starts_at_the_file_holding_the_next_record() {
        let dir =
            std::env::temp_dir().join(format!("portcullis-files-after-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(file_name(1)), lines(1, 3)).unwrap();
        fs::write(dir.join(file_name(2)), lines(4, 6)).unwrap();
        // Just rotated: the newest file is empty.
        fs::write(dir.join(file_name(3)), "").unwrap();
        let names = |after| -> Vec<String> {
            files_after(&dir, after)
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        let all = [file_name(1), file_name(2), file_name(3)];
        assert_eq!(names(0), all);
        assert_eq!(names(2), all);
        assert_eq!(names(3), all[1..]);
        assert_eq!(names(5), all[1..]);
        assert_eq!(names(6), all[1..]);
        assert_eq!(names(1_000), all[1..]);
        // A first line not as `seal` writes it says nothing: nothing before it is skipped
        // on its account.
        fs::write(dir.join(file_name(2)), "{\"not\":\"a record\"}\n").unwrap();
        assert_eq!(names(5), all);
        fs::remove_dir_all(&dir).unwrap();
    }
}
