//! The privileged end-to-end tests (root, BPF_PROG_TEST_RUN, network
//! namespaces, the real `gateway` binary) live in `tests/tests/`; their
//! helpers are in the `test-support` crate, shared with
//! `gateway-userspace`'s integration tests and the benchmarks (`bench/`).
//! This library is empty: cargo needs a target besides the tests.
