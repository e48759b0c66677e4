//! Host ↔ device copies of large buffers through page-locked staging buffers.
//!
//! The backend's inputs and outputs live in ordinary (pageable) host memory. A copy from
//! pageable memory makes the driver stage it through its own small page-locked buffers,
//! one thread at a time: on the H200 run, `cosine-cost-hbm` (201 MB up, 34 MB down) took
//! 25 ms of wall time per call for 0.22 ms on the device, ≈ 9.4 GB/s end to end
//! (`docs/PERFORMANCE.md`, CUDA host path).
//!
//! [`Stager`] keeps two page-locked buffers of [`CHUNK`] bytes for the life of the process
//! (allocated on the first large copy: `cuMemHostAlloc` of a few MiB costs milliseconds, so
//! never per call) and pipelines a copy through them chunk by chunk:
//! - **upload**: the host threads (rayon) copy chunk `k` into one buffer while the DMA
//!   engine moves chunk `k − 1` out of the other;
//! - **download**: the DMA engine fills one buffer with chunk `k` while the host threads
//!   copy chunk `k − 1` out of the other.
//!
//! Each buffer has an event recorded after the DMA that uses it; the host waits for it
//! before touching the buffer again, so a buffer is never rewritten while a copy still reads
//! it. Copies below [`STAGE_MIN`] bytes go straight through the driver (its own path is as
//! fast for them), and so does everything when the buffers could not be allocated (for
//! example under a small `ulimit -l`), while another thread's copy is using them, or when
//! `$OPTICAL_CUDA_STAGING=pageable`.

use std::sync::Arc;

use cudarc::driver::sys::{CUdeviceptr, CUevent_flags};
use cudarc::driver::{result, CudaContext, CudaEvent, CudaStream, DriverError, PinnedHostSlice};
use rayon::prelude::*;

/// Bytes per staging buffer: large enough that the per-chunk cost (an event wait and a
/// copy launch, ≈ 10 µs) is small against the chunk's transfer (≈ 170 µs at 50 GB/s).
pub(super) const CHUNK: usize = 8 << 20;

/// Smallest copy that goes through the staging buffers.
pub(super) const STAGE_MIN: usize = 1 << 20;

/// Bytes each rayon task copies between pageable and page-locked memory.
const PIECE: usize = 256 << 10;

/// What the pipelines need of the driver, for a pair of staging buffers `0` and `1`. Copies
/// are asynchronous: one queued by [`Dma::htod`] may read its buffer, and one queued by
/// [`Dma::dtoh`] may write it, at any time until [`Dma::wait`] on that buffer returns.
trait Dma {
    /// Buffer `buf`'s first `len` bytes, for the host to fill or read.
    fn host(&mut self, buf: usize, len: usize) -> Result<&mut [u8], DriverError>;
    /// Queue a copy of buffer `buf`'s first `len` bytes to device byte offset `offset`.
    fn htod(&mut self, buf: usize, offset: usize, len: usize) -> Result<(), DriverError>;
    /// Queue a copy of `len` bytes at device byte offset `offset` into buffer `buf`.
    fn dtoh(&mut self, buf: usize, offset: usize, len: usize) -> Result<(), DriverError>;
    /// Wait until every copy queued on buffer `buf` has finished.
    fn wait(&mut self, buf: usize) -> Result<(), DriverError>;
}

/// Upload `src` chunk by chunk: the host fills one buffer while the other's copy runs. The
/// last copies may still be queued on return (they read only the staging buffers).
fn upload_chunks(dma: &mut impl Dma, src: &[u8]) -> Result<(), DriverError> {
    for (k, chunk) in src.chunks(CHUNK).enumerate() {
        let buf = k % 2;
        // The copy that last read this buffer (chunk k − 2) must be done before it is
        // rewritten.
        dma.wait(buf)?;
        par_copy(dma.host(buf, chunk.len())?, chunk);
        dma.htod(buf, k * CHUNK, chunk.len())?;
    }
    Ok(())
}

/// Whether values of `T` can be downloaded through the staging buffers: every chunk must
/// hold whole values.
pub(super) fn stages<T>() -> bool {
    let size = std::mem::size_of::<T>();
    size > 0 && CHUNK.is_multiple_of(size)
}

/// Download `len` values chunk by chunk: the host copies chunk k − 1 out of one buffer
/// while chunk k's copy fills the other. The values are appended to a vector allocated
/// without initialising it, so each byte of the result is written once, by the thread pool:
/// `vec![0; len]` first would clear it on one thread (calloc clears memory the allocator
/// reuses), which cost as much as the copy itself. Needs [`stages::<T>()`](stages).
fn download_chunks<T: bytemuck::Pod + Send + Sync>(
    dma: &mut impl Dma,
    len: usize,
) -> Result<Vec<T>, DriverError> {
    debug_assert!(stages::<T>());
    let bytes = len * std::mem::size_of::<T>();
    let mut out = Vec::with_capacity(len);
    let mut pending: Option<(usize, usize)> = None;
    for k in 0..bytes.div_ceil(CHUNK) {
        let chunk = CHUNK.min(bytes - k * CHUNK);
        // This buffer's last chunk (k − 2) was copied out in the previous round.
        dma.dtoh(k % 2, k * CHUNK, chunk)?;
        if let Some((j, done)) = pending.replace((k, chunk)) {
            append_out(dma, j % 2, done, &mut out)?;
        }
    }
    if let Some((j, done)) = pending {
        append_out(dma, j % 2, done, &mut out)?;
    }
    Ok(out)
}

/// Wait for buffer `buf`'s download and append the values in its first `bytes` bytes to
/// `out`, on the rayon pool ([`PIECE`] bytes per task).
fn append_out<T: bytemuck::Pod + Send + Sync>(
    dma: &mut impl Dma,
    buf: usize,
    bytes: usize,
    out: &mut Vec<T>,
) -> Result<(), DriverError> {
    dma.wait(buf)?;
    let size = std::mem::size_of::<T>();
    let host = dma.host(buf, bytes)?;
    out.par_extend(
        host.par_chunks_exact(size)
            .with_min_len(PIECE / size)
            .map(bytemuck::pod_read_unaligned::<T>),
    );
    Ok(())
}

/// One page-locked buffer and the event recorded after the last copy that used it.
struct StageBuf {
    host: PinnedHostSlice<u8>,
    done: CudaEvent,
}

/// Two page-locked buffers of [`CHUNK`] bytes (see the module documentation).
pub(super) struct Stager {
    bufs: [StageBuf; 2],
}

/// [`Dma`] on the CUDA driver: the stager's buffers, a stream and a device allocation.
struct CudaDma<'a> {
    bufs: &'a mut [StageBuf; 2],
    stream: &'a CudaStream,
    /// The device allocation's address and size in bytes.
    device: CUdeviceptr,
    bytes: usize,
}

impl CudaDma<'_> {
    /// The device address of `[offset, offset + len)`, which must lie in the allocation.
    fn at(&self, offset: usize, len: usize) -> Result<CUdeviceptr, DriverError> {
        if offset + len > self.bytes {
            return Err(DriverError(
                cudarc::driver::sys::cudaError_enum::CUDA_ERROR_INVALID_VALUE,
            ));
        }
        Ok(self.device + offset as CUdeviceptr)
    }
}

impl Dma for CudaDma<'_> {
    fn host(&mut self, buf: usize, len: usize) -> Result<&mut [u8], DriverError> {
        Ok(&mut self.bufs[buf].host.as_mut_slice()?[..len])
    }

    fn htod(&mut self, buf: usize, offset: usize, len: usize) -> Result<(), DriverError> {
        let dst = self.at(offset, len)?;
        let b = &mut self.bufs[buf];
        let host = &b.host.as_mut_slice()?[..len];
        // SAFETY: FFI copy of `len` bytes: [dst, dst + len) lies inside the device
        // allocation (checked by `at`); `host` is page-locked memory of at least `len`
        // bytes that the pipeline does not touch again before waiting on `done`, recorded
        // next on the same stream.
        unsafe { result::memcpy_htod_async(dst, host, self.stream.cu_stream()) }?;
        b.done.record(self.stream)
    }

    fn dtoh(&mut self, buf: usize, offset: usize, len: usize) -> Result<(), DriverError> {
        let src = self.at(offset, len)?;
        let b = &mut self.bufs[buf];
        let host = &mut b.host.as_mut_slice()?[..len];
        // SAFETY: FFI copy of `len` bytes: [src, src + len) lies inside the device
        // allocation (checked by `at`); `host` is page-locked memory of at least `len`
        // bytes that the pipeline reads only after waiting on `done`, recorded next on the
        // same stream.
        unsafe { result::memcpy_dtoh_async(host, src, self.stream.cu_stream()) }?;
        b.done.record(self.stream)
    }

    fn wait(&mut self, buf: usize) -> Result<(), DriverError> {
        self.bufs[buf].done.synchronize()
    }
}

/// `dst[..] = src[..]` on the rayon pool, in pieces of [`PIECE`] bytes.
fn par_copy(dst: &mut [u8], src: &[u8]) {
    dst.par_chunks_mut(PIECE)
        .zip(src.par_chunks(PIECE))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

impl Stager {
    /// Allocate the two buffers (plain page-locked memory, not write-combined: the host
    /// reads them back on downloads).
    pub(super) fn new(ctx: &Arc<CudaContext>) -> Result<Stager, DriverError> {
        let buf = || -> Result<StageBuf, DriverError> {
            Ok(StageBuf {
                // SAFETY: FFI allocation of CHUNK bytes of page-locked memory; its contents
                // start undefined, and every byte the stager reads back has been written
                // first (by the host before an upload, by the copy before a download).
                host: unsafe { ctx.alloc_pinned_with_flags::<u8>(CHUNK, 0) }?,
                done: ctx.new_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))?,
            })
        };
        Ok(Stager {
            bufs: [buf()?, buf()?],
        })
    }

    /// Copy `src` to the device allocation at `dst` of `bytes` bytes (at least
    /// `src.len()`). Returns once every chunk is in a staging buffer or on the device; the
    /// last copies may still be queued on `stream` (they read only the staging buffers).
    pub(super) fn upload(
        &mut self,
        stream: &CudaStream,
        src: &[u8],
        dst: CUdeviceptr,
        bytes: usize,
    ) -> Result<(), DriverError> {
        stream.context().bind_to_thread()?;
        let mut dma = CudaDma {
            bufs: &mut self.bufs,
            stream,
            device: dst,
            bytes,
        };
        upload_chunks(&mut dma, src)
    }

    /// The `len` values of type `T` at the start of the device allocation at `src` of
    /// `bytes` bytes, after the work queued on `stream` so far. Needs
    /// [`stages::<T>()`](stages).
    pub(super) fn download<T: bytemuck::Pod + Send + Sync>(
        &mut self,
        stream: &CudaStream,
        src: CUdeviceptr,
        bytes: usize,
        len: usize,
    ) -> Result<Vec<T>, DriverError> {
        stream.context().bind_to_thread()?;
        let mut dma = CudaDma {
            bufs: &mut self.bufs,
            stream,
            device: src,
            bytes,
        };
        download_chunks(&mut dma, len)
    }
}

impl Drop for Stager {
    fn drop(&mut self) {
        // No copy may still read or write a buffer when it is freed.
        for buf in &self.bufs {
            let _ = buf.done.synchronize();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that runs each queued copy late: only when [`Dma::wait`] reaches it (in
    /// queue order, as one stream would), reading or writing the staging buffer as it is
    /// then. A pipeline that rewrote a buffer before its upload ran, or read one before its
    /// download ran, moves the wrong bytes.
    struct LateDevice {
        memory: Vec<u8>,
        bufs: [Vec<u8>; 2],
        /// Queued copies: (to the device?, buffer, device offset, length).
        queue: Vec<(bool, usize, usize, usize)>,
        waits: usize,
    }

    impl LateDevice {
        fn new(memory: Vec<u8>) -> Self {
            LateDevice {
                memory,
                bufs: [vec![0xAA; CHUNK], vec![0xBB; CHUNK]],
                queue: vec![],
                waits: 0,
            }
        }

        /// Run the first `count` queued copies.
        fn run(&mut self, count: usize) {
            for (to_device, buf, offset, len) in self.queue.drain(..count) {
                if to_device {
                    self.memory[offset..offset + len].copy_from_slice(&self.bufs[buf][..len]);
                } else {
                    self.bufs[buf][..len].copy_from_slice(&self.memory[offset..offset + len]);
                }
            }
        }

        /// Everything queued has run (a stream synchronisation).
        fn drain(&mut self) {
            self.run(self.queue.len());
        }
    }

    impl Dma for LateDevice {
        fn host(&mut self, buf: usize, len: usize) -> Result<&mut [u8], DriverError> {
            Ok(&mut self.bufs[buf][..len])
        }
        fn htod(&mut self, buf: usize, offset: usize, len: usize) -> Result<(), DriverError> {
            assert!(
                offset + len <= self.memory.len(),
                "copy beyond the allocation"
            );
            self.queue.push((true, buf, offset, len));
            Ok(())
        }
        fn dtoh(&mut self, buf: usize, offset: usize, len: usize) -> Result<(), DriverError> {
            assert!(
                offset + len <= self.memory.len(),
                "copy beyond the allocation"
            );
            self.queue.push((false, buf, offset, len));
            Ok(())
        }
        fn wait(&mut self, buf: usize) -> Result<(), DriverError> {
            self.waits += 1;
            if let Some(last) = self.queue.iter().rposition(|&(_, b, _, _)| b == buf) {
                self.run(last + 1);
            }
            Ok(())
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
            .collect()
    }

    /// Sizes around the chunk boundaries: one byte, one chunk ± 1, two chunks, three with a
    /// partial last one.
    const SIZES: [usize; 6] = [1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 4_097];

    #[test]
    fn uploads_survive_late_copies() {
        for len in SIZES {
            let src = pattern(len, 1);
            let mut dev = LateDevice::new(vec![0; len]);
            upload_chunks(&mut dev, &src).unwrap();
            dev.drain();
            let first_bad = dev.memory.iter().zip(&src).position(|(a, b)| a != b);
            assert_eq!(first_bad, None, "upload of {len} bytes");
            assert!(dev.waits >= len.div_ceil(CHUNK), "{} waits", dev.waits);
        }
    }

    #[test]
    fn downloads_survive_late_copies() {
        for len in SIZES {
            let memory = pattern(len, 2);
            let mut dev = LateDevice::new(memory.clone());
            let out: Vec<u8> = download_chunks(&mut dev, len).unwrap();
            assert_eq!(out.len(), len);
            let first_bad = out.iter().zip(&memory).position(|(a, b)| a != b);
            assert_eq!(first_bad, None, "download of {len} bytes");
        }
    }

    /// Values wider than a byte come back whole and in order across the chunk boundaries.
    #[test]
    fn downloads_of_floats_and_doubles_survive_late_copies() {
        // Compared bit for bit (the pattern holds NaNs).
        fn check<T: bytemuck::Pod + Send + Sync>(len: usize) {
            let memory = pattern(len * std::mem::size_of::<T>(), 4);
            let mut dev = LateDevice::new(memory.clone());
            let out: Vec<T> = download_chunks(&mut dev, len).unwrap();
            assert_eq!(out.len(), len);
            let got: &[u8] = bytemuck::cast_slice(&out);
            let first_bad = got.iter().zip(&memory).position(|(a, b)| a != b);
            assert_eq!(first_bad, None, "download of {len} values");
        }
        assert!(stages::<f32>() && stages::<f64>() && !stages::<[f32; 3]>() && !stages::<()>());
        for len in [1, CHUNK / 4 - 1, CHUNK / 4 + 1, 2 * CHUNK / 4 + 1_025] {
            check::<f32>(len);
        }
        check::<f64>(CHUNK / 8 + 3);
    }

    /// A download that did not wait for a buffer's copy before reading it would return the
    /// buffer's old bytes: the fake device catches it.
    #[test]
    fn the_late_device_catches_a_read_before_the_wait() {
        let len = 2 * CHUNK;
        let memory = pattern(len, 5);
        let mut dev = LateDevice::new(memory.clone());
        dev.dtoh(0, 0, CHUNK).unwrap();
        let early = dev.host(0, CHUNK).unwrap().to_vec();
        assert_ne!(early, memory[..CHUNK]);
    }

    /// The fake catches the hazard it is there for: a pipeline that skips the wait before
    /// rewriting a buffer uploads the later chunk's bytes in place of the earlier one's.
    #[test]
    fn the_late_device_catches_a_missing_wait() {
        let len = 3 * CHUNK;
        let src = pattern(len, 3);
        let mut dev = LateDevice::new(vec![0; len]);
        for (k, chunk) in src.chunks(CHUNK).enumerate() {
            dev.host(k % 2, chunk.len()).unwrap().copy_from_slice(chunk);
            dev.htod(k % 2, k * CHUNK, chunk.len()).unwrap();
        }
        dev.drain();
        assert_ne!(dev.memory, src);
    }
}
