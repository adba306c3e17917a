//! Device-to-host reads of the training loop, counted.
//!
//! A GPU that has to hand a value back to the host waits for all queued work first, so a training step
//! that reads anything back stalls the device once per read. The loop therefore reads the device only
//! through [`read`], at log points (every `log_every` steps and at the end of an epoch), at evaluation and
//! at checkpoints; [`reads_on_this_thread`] lets tests and benchmarks check that no step reads anything.

use std::cell::Cell;

use burn::prelude::*;

thread_local! {
    static READS: Cell<u64> = const { Cell::new(0) };
}

/// Read `tensor` back to the host, counting the read on the calling thread.
pub fn read<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> TensorData {
    READS.with(|r| r.set(r.get() + 1));
    tracing::trace!(dims = ?tensor.dims(), "device-to-host read");
    tensor.into_data()
}

/// [`read`] as `f32` values, row-major.
pub fn read_f32<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    read(tensor).iter::<f32>().collect()
}

/// [`read`] as `f64` values, row-major.
pub fn read_f64<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f64> {
    read(tensor).iter::<f64>().collect()
}

/// Reads made through [`read`] on the calling thread since the thread started.
pub fn reads_on_this_thread() -> u64 {
    READS.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_counted_per_thread() {
        type TB = burn::backend::Flex;
        let before = reads_on_this_thread();
        let t = Tensor::<TB, 1>::from_floats([1.0, 2.0], &Default::default());
        assert_eq!(read_f64(t.clone()), vec![1.0, 2.0]);
        assert_eq!(read_f32(t), vec![1.0, 2.0]);
        assert_eq!(reads_on_this_thread(), before + 2);
        let other = std::thread::spawn(reads_on_this_thread).join().unwrap();
        assert_eq!(other, 0);
    }
}
