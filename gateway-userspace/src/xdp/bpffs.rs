//! bpffs: maps are pinned there so they outlive the gateway process. A fresh
//! machine may not have it mounted; mount it at /sys/fs/bpf if needed.

#![allow(
    unsafe_code,
    reason = "statfs(2) and mount(2) through libc: neither std nor rustix's enabled features wrap them"
)]

use std::{ffi::CString, os::unix::ffi::OsStrExt as _, path::Path};

use anyhow::{Context as _, Result, bail};

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

/// Makes sure `dir` exists on a bpffs, mounting bpffs at /sys/fs/bpf when
/// `dir` is below it and nothing is mounted there yet.
pub fn ensure_dir(dir: &Path) -> Result<()> {
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
            let err = std::io::Error::last_os_error();
            bail!(
                "bpffs is not mounted at {DEFAULT_MOUNT} and mounting it failed: {err} (are you root?)"
            );
        }
        tracing::info!("mounted bpffs at {DEFAULT_MOUNT}");
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating pin directory {}", dir.display()))?;
    if !is_bpffs(dir) {
        bail!(
            "pin directory {} is not on a bpffs mount; choose a directory under {DEFAULT_MOUNT}",
            dir.display()
        );
    }
    Ok(())
}
