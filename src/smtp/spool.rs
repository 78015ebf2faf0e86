//! Message content storage for one transaction: in memory up to a threshold, then in an
//! unnamed temporary file (deleted by the OS when dropped), so memory stays bounded whatever the
//! message size.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

pub struct Spool {
    memory: Vec<u8>,
    file: Option<File>,
    len: u64,
    threshold: usize,
    dir: Option<PathBuf>,
}

impl Spool {
    pub fn new(threshold: usize, dir: Option<PathBuf>) -> Self {
        Spool {
            memory: Vec::new(),
            file: None,
            len: 0,
            threshold,
            dir,
        }
    }

    /// Content already in memory (e.g. a sealed copy), without copying it.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Spool {
            len: bytes.len() as u64,
            threshold: bytes.len(),
            memory: bytes,
            file: None,
            dir: None,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True once the content has moved to a temporary file.
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() && self.memory.len() + bytes.len() > self.threshold {
            let mut file = match &self.dir {
                Some(dir) => tempfile::tempfile_in(dir)?,
                None => tempfile::tempfile()?,
            };
            file.write_all(&self.memory)?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        match &mut self.file {
            Some(file) => file.write_all(bytes)?,
            None => self.memory.extend_from_slice(bytes),
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// The whole content in memory (no copy when it never left memory). Blocking file I/O when
    /// it spilled: call it off the async reactor.
    pub fn into_bytes(self) -> io::Result<Vec<u8>> {
        let Some(file) = self.file else {
            return Ok(self.memory);
        };
        let mut out = vec![0u8; usize::try_from(self.len).map_err(io::Error::other)?];
        file.read_exact_at(&mut out, 0)?;
        Ok(out)
    }

    /// Reads content at `offset`; 0 at the end.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        match &self.file {
            Some(file) => file.read_at(buf, offset),
            None => {
                let start = offset as usize;
                let n = buf.len().min(self.memory.len() - start);
                buf[..n].copy_from_slice(&self.memory[start..start + n]);
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(s: &Spool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = s.read_at(out.len() as u64, &mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn spills_past_the_threshold_and_reads_back_the_same_bytes() {
        let mut s = Spool::new(10, None);
        s.write(b"12345").unwrap();
        assert!(!s.spilled());
        s.write(b"678901").unwrap();
        assert!(s.spilled());
        s.write(b"abc").unwrap();
        assert_eq!(s.len(), 14);
        assert_eq!(read_all(&s), b"12345678901abc");
        let small = {
            let mut s = Spool::new(10, None);
            s.write(b"abc").unwrap();
            s
        };
        assert_eq!(read_all(&small), b"abc");
        assert_eq!(small.into_bytes().unwrap(), b"abc");
        assert_eq!(s.into_bytes().unwrap(), b"12345678901abc");
    }
}
