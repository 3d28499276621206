//! Small helpers for the threads that quantize and write while calibration goes on.

/// Lowers the calling thread's scheduling priority (nice 10, Linux): quantizing and writing layer L must not
/// take the CPU from the thread that drives layer L+1's calibration on the GPU, which launches its kernels.
pub fn background_priority() {
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    // SAFETY: plain system calls on the calling thread's own id; a failure only leaves the priority as it was.
    unsafe {
        let thread = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, 10);
    }
}

/// A mutex's guard, also when a thread panicked holding it (the panic is reported through its join).
pub fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
