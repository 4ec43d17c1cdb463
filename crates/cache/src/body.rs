//! Bodies served from the cache: memory chunks, a body file, or an object still being filled.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use crate::fill::{Fill, FillEnd};
use crate::tier::BodySource;

const FILE_CHUNK: usize = 64 * 1024;

type Follow = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

pub struct CachedBody {
    inner: Inner,
    remaining: u64,
}

enum Inner {
    Chunks {
        chunks: Arc<[Bytes]>,
        next: usize,
    },
    /// Read synchronously, as nginx does without `aio`: page-cache reads are short.
    File {
        file: File,
    },
    Follow(Follow),
}

impl CachedBody {
    pub fn empty() -> CachedBody {
        CachedBody {
            inner: Inner::Chunks {
                chunks: Arc::from(Vec::new()),
                next: 0,
            },
            remaining: 0,
        }
    }

    /// The stored body, or the `[start, end)` byte range of it.
    pub fn from_source(
        source: &BodySource,
        range: Option<(u64, u64)>,
    ) -> std::io::Result<CachedBody> {
        match source {
            BodySource::Memory(chunks) => {
                let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                let Some((start, end)) = range else {
                    return Ok(CachedBody {
                        inner: Inner::Chunks {
                            chunks: chunks.clone(),
                            next: 0,
                        },
                        remaining: total,
                    });
                };
                let mut out = Vec::new();
                let mut offset = 0u64;
                for c in chunks.iter() {
                    let (c_start, c_end) = (offset, offset + c.len() as u64);
                    offset = c_end;
                    if c_end <= start || c_start >= end {
                        continue;
                    }
                    let from = start.saturating_sub(c_start) as usize;
                    let to = (end.min(c_end) - c_start) as usize;
                    out.push(c.slice(from..to));
                }
                Ok(CachedBody {
                    inner: Inner::Chunks {
                        chunks: out.into(),
                        next: 0,
                    },
                    remaining: end - start,
                })
            }
            BodySource::File { path, len } => {
                let mut file = File::open(path)?;
                let (start, end) = range.unwrap_or((0, *len));
                if start > 0 {
                    file.seek(SeekFrom::Start(start))?;
                }
                Ok(CachedBody {
                    inner: Inner::File { file },
                    remaining: end - start,
                })
            }
        }
    }

    /// Streams an object still being filled, from its start.
    pub fn follow(fill: Arc<Fill>, len: Option<u64>) -> CachedBody {
        CachedBody {
            inner: Inner::Follow(Box::pin(follow_stream(fill))),
            remaining: len.unwrap_or(u64::MAX),
        }
    }

    /// The exact length, when known.
    pub fn len(&self) -> Option<u64> {
        (self.remaining != u64::MAX).then_some(self.remaining)
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    pub fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<std::io::Result<Bytes>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let out = match &mut self.inner {
            Inner::Chunks { chunks, next } => {
                let c = chunks.get(*next).cloned();
                *next += 1;
                c.map(Ok)
            }
            Inner::File { file } => {
                let want = self.remaining.min(FILE_CHUNK as u64) as usize;
                let mut buf = BytesMut::zeroed(want);
                match file.read(&mut buf) {
                    Ok(0) => Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "cached body file shorter than its head says",
                    ))),
                    Ok(n) => {
                        buf.truncate(n);
                        Some(Ok(buf.freeze()))
                    }
                    Err(e) => Some(Err(e)),
                }
            }
            Inner::Follow(s) => match s.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(x) => x,
            },
        };
        match &out {
            Some(Ok(b)) if self.remaining != u64::MAX => {
                self.remaining = self.remaining.saturating_sub(b.len() as u64)
            }
            None => self.remaining = 0,
            _ => {}
        }
        Poll::Ready(out)
    }
}

/// Where a follower is in the fill.
struct Cursor {
    fill: Arc<Fill>,
    rx: tokio::sync::watch::Receiver<u64>,
    offset: u64,
    chunk: usize,
    file: Option<File>,
}

fn follow_stream(fill: Arc<Fill>) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    let rx = fill.subscribe();
    let cursor = Cursor {
        fill,
        rx,
        offset: 0,
        chunk: 0,
        file: None,
    };
    futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            let step = next_step(&mut c);
            match step {
                Step::Data(b) => {
                    c.offset += b.len() as u64;
                    return Some((Ok(b), c));
                }
                Step::ReadFile(path, upto) => {
                    let r = read_spill(&mut c, &path, upto);
                    return match r {
                        Ok(b) => {
                            c.offset += b.len() as u64;
                            Some((Ok(b), c))
                        }
                        Err(e) => Some((Err(e), c)),
                    };
                }
                Step::Done => return None,
                Step::Broken => {
                    return Some((
                        Err(std::io::Error::other("the origin response broke off")),
                        Cursor {
                            offset: u64::MAX,
                            ..c
                        },
                    ));
                }
                Step::Wait => {
                    if c.rx.changed().await.is_err() {
                        return None;
                    }
                }
            }
        }
    })
}

enum Step {
    Data(Bytes),
    ReadFile(std::path::PathBuf, u64),
    Wait,
    Done,
    Broken,
}

fn next_step(c: &mut Cursor) -> Step {
    if c.offset == u64::MAX {
        return Step::Done;
    }
    let s = c.fill.lock();
    if s.in_memory {
        if let Some(b) = s.chunks.get(c.chunk) {
            c.chunk += 1;
            return Step::Data(b.clone());
        }
    } else if let Some((path, written)) = &s.spill
        && c.offset < *written
    {
        return Step::ReadFile(path.clone(), *written);
    }
    match s.end {
        FillEnd::Running => Step::Wait,
        FillEnd::Complete if c.offset >= s.received => Step::Done,
        FillEnd::Complete => match &s.spill {
            Some((path, written)) => Step::ReadFile(path.clone(), *written),
            None => Step::Broken,
        },
        FillEnd::Abandoned | FillEnd::Failed => Step::Broken,
    }
}

fn read_spill(c: &mut Cursor, path: &std::path::Path, upto: u64) -> std::io::Result<Bytes> {
    if c.file.is_none() {
        // The leader renames the file when it commits; the fill then names the new path.
        let mut f = match File::open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let moved = c.fill.lock().spill.as_ref().map(|(p, _)| p.clone());
                File::open(moved.ok_or(e)?)?
            }
            r => r?,
        };
        f.seek(SeekFrom::Start(c.offset))?;
        c.file = Some(f);
    }
    let want = (upto - c.offset).min(FILE_CHUNK as u64) as usize;
    let mut buf = BytesMut::zeroed(want);
    let n = c.file.as_mut().map_or(Ok(0), |f| f.read(&mut buf))?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "cache fill file shorter than announced",
        ));
    }
    buf.truncate(n);
    Ok(buf.freeze())
}
