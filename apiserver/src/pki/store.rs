//! File IO for the PKI directory: optional reads, and atomic writes (temp file in the same
//! directory, fsync, rename, fsync the directory) with an explicit file mode, so a crash
//! never leaves a half-written key and a secret is never readable by others, not even
//! briefly.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::PkiError;

/// Mode for private keys, tokens and kubeconfigs.
pub(super) const SECRET_MODE: u32 = 0o600;
/// Mode for certificates (public).
pub(super) const PUBLIC_MODE: u32 = 0o644;

/// Reads a UTF-8 file; `Ok(None)` if it does not exist.
pub(super) fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Creates `dir` (and parents) if missing; a directory created here is private (0700).
pub(super) fn ensure_dir(dir: &Path) -> Result<(), PkiError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| PkiError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Narrows the mode of an existing secret file to [`SECRET_MODE`] if it is wider
/// (for example after a copy with a permissive umask).
pub(super) fn tighten_secret_mode(path: &Path) -> Result<(), PkiError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let err = |source| PkiError::Write {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(err)?;
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(SECRET_MODE)).map_err(err)?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Atomically replaces `path` with `contents`, created with `mode`.
pub(super) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path has no file name",
        ))
    })?;
    let mut nonce = [0u8; 6];
    super::issue::random_bytes(&mut nonce)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", hex::encode(nonce)));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let mut file = opts.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        #[cfg(unix)]
        fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}
