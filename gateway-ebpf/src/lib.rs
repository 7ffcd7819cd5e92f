//! Empty on purpose: the XDP program is the `gateway` binary target of this
//! crate (`src/main.rs`), built for bpfel-unknown-none by
//! gateway-userspace's build script. This library target only lets
//! gateway-userspace name the crate as a build dependency, so cargo rebuilds
//! the program when its sources change.
#![no_std]
