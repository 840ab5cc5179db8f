//! Transparent huge pages for libtorch's CPU tensors.
//!
//! glibc serves large allocations as fresh `mmap`s, so every 4 KiB page of
//! a large tensor is faulted in and zeroed by the kernel when first
//! touched: kernel page faults and page clearing were about 12% of the
//! samples of a SAM ViT-B image embedding on 2 cores, on the clisc and the
//! PyTorch side alike (`docs/performance.md`). libtorch's CPU allocator can
//! align large allocations to 2 MiB and ask the kernel for transparent huge
//! pages instead (`THP_MEM_ALLOC_ENABLE=1`, read once, at its first
//! allocation), which makes that cost 512 times rarer. clisc turns it on
//! unless the variable is already set; `THP_MEM_ALLOC_ENABLE=0` keeps 4 KiB
//! pages. Where the kernel does not grant huge pages (THP `never`), nothing
//! changes. Child processes (out-of-process plugins, whose PyTorch reads
//! the same variable) inherit the setting.

/// The libtorch environment variable this module sets.
pub(crate) const VARIABLE: &str = "THP_MEM_ALLOC_ENABLE";

/// Sets `THP_MEM_ALLOC_ENABLE=1` unless the environment already sets it.
/// Call first thing in `main`, before any thread starts or any tensor is
/// allocated (libtorch reads the variable once).
pub fn enable_for_tensors() {
    if std::env::var_os(VARIABLE).is_none() {
        std::env::set_var(VARIABLE, "1");
    }
}
