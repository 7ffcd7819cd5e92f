//! bpffs: maps are pinned there so they outlive the gateway process. A fresh
//! machine may not have it mounted; mount it at /sys/fs/bpf if needed.

#![allow(
    unsafe_code,
    reason = "statfs(2) and mount(2) through libc: neither std nor rustix's enabled features wrap them"
)]

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const DEFAULT_MOUNT: &str = "/sys/fs/bpf";

/// Whether `path` lies on a bpffs mount.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is writable.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Why the pin directory is not usable.
#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    /// bpffs is not mounted at /sys/fs/bpf and mount(2) failed (usually:
    /// not root).
    #[error("bpffs is not mounted at {DEFAULT_MOUNT} and mounting it failed: {0} (are you root?)")]
    Mount(std::io::Error),
    /// The pin directory could not be created.
    #[error("creating pin directory {}", .dir.display())]
    CreateDir {
        /// The configured `[xdp] pin_dir`.
        dir: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The pin directory is on another file system (the config's to fix).
    #[error(
        "pin directory {} is not on a bpffs mount; choose a directory under {DEFAULT_MOUNT}",
        .0.display()
    )]
    NotBpffs(PathBuf),
}

/// Makes sure `dir` exists on a bpffs, mounting bpffs at /sys/fs/bpf when
/// `dir` is below it and nothing is mounted there yet.
pub fn ensure_dir(dir: &Path) -> Result<(), BpffsError> {
    let mount_point = Path::new(DEFAULT_MOUNT);
    if dir.starts_with(mount_point) && !is_bpffs(mount_point) {
        std::fs::create_dir_all(mount_point).ok();
        let src = CString::new("bpf").expect("static");
        let target = CString::new(DEFAULT_MOUNT).expect("static");
        // SAFETY: all pointers are valid NUL-terminated strings; data is null.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(BpffsError::Mount(std::io::Error::last_os_error()));
        }
        tracing::info!("mounted bpffs at {DEFAULT_MOUNT}");
    }
    std::fs::create_dir_all(dir).map_err(|source| BpffsError::CreateDir {
        dir: dir.to_owned(),
        source,
    })?;
    if !is_bpffs(dir) {
        return Err(BpffsError::NotBpffs(dir.to_owned()));
    }
    Ok(())
}
