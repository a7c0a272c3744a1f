//! The workspace as `cordon submit` uploads it: the tar `cordon run` makes (same excludes,
//! same caps), gzip-compressed while it is sent. Nothing holds the whole archive: the
//! archiver (a blocking thread) is at most a few 64 KiB chunks ahead of the connection, so the
//! client's memory stays flat whatever the workspace's size.
//!
//! The wire format is the service's (`src/server/upload.rs`): the `workspace` part of the
//! `multipart/form-data` submission, a gzip-compressed tar. Its length is not known in
//! advance, so the body goes out chunked.

use std::io::{self, Write};
use std::path::Path;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::task::JoinHandle;

use crate::cli::client::{Failure, infra, invalid};
use crate::sandbox::TarStats;
use crate::sandbox::archive::{self, ArchiveError, WorkspaceOptions};

/// The archiver behind one upload: its own error explains a failed upload better than the
/// connection's does.
pub(super) struct Archiver(JoinHandle<Result<TarStats, ArchiveError>>);

/// The `workspace` part for `src`, produced as it is sent, and its archiver.
pub(super) fn workspace_part(
    src: &Path,
    opts: &WorkspaceOptions,
) -> Result<(reqwest::multipart::Part, Archiver), Failure> {
    let (tar, handle) = archive::workspace_tar_stream(src.to_path_buf(), opts.clone());
    let body = reqwest::Body::wrap_stream(gzip(tar));
    let part = reqwest::multipart::Part::stream(body)
        .file_name("workspace.tar.gz")
        .mime_str("application/gzip")
        .map_err(|e| infra(format!("cannot make the upload: {e}")))?;
    Ok((part, Archiver(handle)))
}

impl Archiver {
    /// The archive's failure (a workspace too large, a file it cannot read), as exit 2. With
    /// `wait`, waits for the archiver to stop (it does promptly once its stream is dropped);
    /// without, looks only if it has already stopped.
    pub(super) async fn failure(self, wait: bool) -> Option<Failure> {
        if !wait && !self.0.is_finished() {
            return None;
        }
        match self.0.await {
            Ok(Ok(_)) | Ok(Err(ArchiveError::Cancelled)) => None,
            Ok(Err(e)) => Some(invalid(format!(
                "archiving the workspace: {}",
                crate::error::error_chain(&e)
            ))),
            Err(e) => Some(infra(format!("archiving the workspace failed: {e}"))),
        }
    }
}

/// `tar`, gzip-compressed chunk by chunk. An error in `tar` ends the stream with that error
/// (never cleanly, so the service never takes a partial archive for a whole one).
fn gzip<S>(tar: S) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
{
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    futures_util::stream::unfold(Some((tar, encoder)), |state| async move {
        let (mut tar, mut gz) = state?;
        loop {
            match tar.next().await {
                Some(Ok(chunk)) => {
                    if let Err(e) = gz.write_all(&chunk) {
                        return Some((Err(e), None));
                    }
                    if !gz.get_ref().is_empty() {
                        let out = Bytes::from(std::mem::take(gz.get_mut()));
                        return Some((Ok(out), Some((tar, gz))));
                    }
                }
                Some(Err(e)) => return Some((Err(e), None)),
                None => return Some((gz.finish().map(Bytes::from), None)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn chunks(parts: Vec<io::Result<Bytes>>) -> impl Stream<Item = io::Result<Bytes>> + Unpin {
        futures_util::stream::iter(parts)
    }

    #[tokio::test]
    async fn the_compressed_stream_decompresses_to_its_input() {
        let input: Vec<Bytes> = (0..50u8)
            .map(|i| Bytes::from(vec![i; 10_000 + usize::from(i)]))
            .collect();
        let expected: Vec<u8> = input.iter().flat_map(|b| b.to_vec()).collect();
        let out: Vec<io::Result<Bytes>> = gzip(chunks(input.into_iter().map(Ok).collect()))
            .collect()
            .await;
        let mut gz = Vec::new();
        for c in out {
            gz.extend_from_slice(&c.expect("no error"));
        }
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .expect("a whole gzip stream");
        assert_eq!(back, expected);
    }

    #[tokio::test]
    async fn an_error_in_the_tar_ends_the_stream_with_it() {
        let parts = vec![
            Ok(Bytes::from_static(b"some tar bytes")),
            Err(io::Error::other("cannot read a/b")),
            Ok(Bytes::from_static(b"never sent")),
        ];
        let out: Vec<io::Result<Bytes>> = gzip(chunks(parts)).collect().await;
        let last = out.last().expect("an item");
        assert!(
            matches!(last, Err(e) if e.to_string() == "cannot read a/b"),
            "{out:?}"
        );
    }
}
