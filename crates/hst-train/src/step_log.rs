//! Loss terms and pseudo-label counts of the training steps, summed on the device and read at log points.
//!
//! Each step adds its loss terms and its pseudo-label counts to one small device vector; the host reads
//! that vector once per window of `log_every` steps (and at the end of an epoch, before any checkpoint), so
//! a step itself reads nothing back. What the host already knows (which terms are active, the unknown and
//! hidden-positive counts of the batch's labels) never goes to the device.

use burn::prelude::*;
use hst_transfer::HstLosses;

use crate::host;
use crate::metrics::PseudoLabelQuality;

/// Names of the loss terms, in the order of the device vector (`total` first).
pub const TERMS: [&str; 9] = [
    "total",
    "partial_bce",
    "ist_bce",
    "cst_bce",
    "ist_asl",
    "instance",
    "prototype",
    "dtl_ist",
    "dtl_cst",
];

/// Slots after the loss terms: positive pseudo labels on unknown entries and the correct ones, IST then CST.
const COUNTS: usize = 4;

/// The sums of one window of steps, read from the device.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSums {
    /// Steps in the window.
    pub steps: usize,
    /// First batch index of the window (within its epoch).
    pub first_batch: usize,
    /// Last batch index of the window.
    pub last_batch: usize,
    /// `(name, sum over the steps where the term was active)` for the active terms, `total` first.
    pub terms: Vec<(&'static str, f64)>,
    /// IST pseudo-label counts of the window, when IST gave pseudo labels.
    pub ist: Option<PseudoLabelQuality>,
    /// CST pseudo-label counts of the window, when CST gave pseudo labels.
    pub cst: Option<PseudoLabelQuality>,
}

impl WindowSums {
    /// The summed total loss (non-finite if any step's was).
    pub fn total(&self) -> f64 {
        self.terms[0].1
    }

    /// `name=mean` of every active term, for messages.
    pub fn describe(&self) -> String {
        self.terms
            .iter()
            .map(|(k, v)| format!("{k}={}", v / self.steps.max(1) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Host-known pseudo-label counts of a window (unknown entries, hidden positives among them).
#[derive(Debug, Clone, Copy, Default)]
struct HostCounts {
    unknown: usize,
    hidden_positives: usize,
}

/// Sums of the steps since the last read (see the module doc).
#[derive(Debug)]
pub struct StepLog<B: Backend> {
    sums: Option<Tensor<B, 1>>,
    active: [bool; TERMS.len()],
    host_ist: Option<HostCounts>,
    host_cst: Option<HostCounts>,
    steps: usize,
    first_batch: usize,
    last_batch: usize,
}

impl<B: Backend> Default for StepLog<B> {
    fn default() -> Self {
        Self {
            sums: None,
            active: [false; TERMS.len()],
            host_ist: None,
            host_cst: None,
            steps: 0,
            first_batch: 0,
            last_batch: 0,
        }
    }
}

impl<B: Backend> StepLog<B> {
    /// Steps added since the last [`read`](Self::read).
    pub fn pending(&self) -> usize {
        self.steps
    }

    /// Add one step: its losses (any backend's tensors, here on the inner, detached backend), the partial
    /// labels as host values and as a tensor, and the full labels as host values and as a tensor.
    ///
    /// # Shapes
    /// - partial, full: `[batch, classes]` (host: row-major)
    pub fn push(
        &mut self,
        batch: usize,
        losses: &HstLosses<B>,
        partial: (&[f32], &Tensor<B, 2>),
        full: (&[f32], &Tensor<B, 2>),
    ) {
        let device = losses.total.device();
        let optional = [
            &losses.ist_bce,
            &losses.cst_bce,
            &losses.ist_asl,
            &losses.instance,
            &losses.prototype,
            &losses.dtl_ist,
            &losses.dtl_cst,
        ];
        let mut slots: Vec<Tensor<B, 1>> = Vec::with_capacity(TERMS.len() + COUNTS);
        slots.push(losses.total.clone());
        slots.push(losses.partial_bce.clone());
        self.active[0] = true;
        self.active[1] = true;
        for (i, term) in optional.into_iter().enumerate() {
            match term {
                Some(t) => {
                    self.active[2 + i] = true;
                    slots.push(t.clone());
                }
                None => slots.push(Tensor::zeros([1], &device)),
            }
        }
        let unknown = partial.1.clone().equal_elem(0.0); // [batch, classes]
        let positive = full.1.clone().greater_elem(0.0); // [batch, classes]
        for (targets, host) in [
            (&losses.ist_targets, &mut self.host_ist),
            (&losses.cst_targets, &mut self.host_cst),
        ] {
            match targets {
                Some(t) => {
                    let predicted = t.clone().greater_elem(0.0).bool_and(unknown.clone());
                    let correct = predicted.clone().bool_and(positive.clone());
                    slots.push(predicted.float().sum());
                    slots.push(correct.float().sum());
                    let h = host.get_or_insert_with(HostCounts::default);
                    for (p, f) in partial.0.iter().zip(full.0) {
                        if *p == 0.0 {
                            h.unknown += 1;
                            h.hidden_positives += usize::from(*f > 0.0);
                        }
                    }
                }
                None => {
                    slots.push(Tensor::zeros([1], &device));
                    slots.push(Tensor::zeros([1], &device));
                }
            }
        }
        let step = Tensor::cat(slots, 0); // [TERMS + COUNTS]
        self.sums = Some(match self.sums.take() {
            Some(s) => s + step,
            None => step,
        });
        if self.steps == 0 {
            self.first_batch = batch;
        }
        self.last_batch = batch;
        self.steps += 1;
    }

    /// Read the window's sums (one device read, through [`host::read`]) and start a new window; `None` when
    /// no step was added since the last read.
    pub fn read(&mut self) -> Option<WindowSums> {
        let sums = self.sums.take()?;
        let values = host::read_f64(sums);
        let (ist, cst, steps) = (self.host_ist, self.host_cst, self.steps);
        Some(self.window(&values, ist, cst, steps))
    }

    /// [`read`](Self::read) for data-parallel peers: the window vector (with this peer's host counts, step
    /// count and `stop` request appended) goes through `reduce`, a sum over all peers, before the one read.
    /// Every peer then holds the same window of all peers' steps, and whether any peer asked to stop.
    /// `Ok(None)` when no step was added since the last read (on every peer alike: they step in lockstep).
    ///
    /// # Errors
    /// Those of `reduce`.
    pub fn read_across<E>(
        &mut self,
        stop: bool,
        reduce: impl FnOnce(Tensor<B, 1>) -> Result<Tensor<B, 1>, E>,
    ) -> Result<Option<(WindowSums, bool)>, E> {
        let Some(sums) = self.sums.take() else {
            return Ok(None);
        };
        let device = sums.device();
        let (ist, cst) = (self.host_ist, self.host_cst);
        let host = |h: Option<HostCounts>| {
            h.map_or((0.0, 0.0), |h| {
                (h.unknown as f32, h.hidden_positives as f32)
            })
        };
        let ((iu, ih), (cu, ch)) = (host(ist), host(cst));
        let extra = [iu, ih, cu, ch, self.steps as f32, f32::from(u8::from(stop))];
        let vector = Tensor::cat(vec![sums, Tensor::from_floats(extra, &device)], 0);
        let values = host::read_f64(reduce(vector)?);
        let n = TERMS.len() + COUNTS;
        let summed = |h: Option<HostCounts>, at: usize| {
            h.map(|_| HostCounts {
                unknown: values[n + at].round() as usize,
                hidden_positives: values[n + at + 1].round() as usize,
            })
        };
        let (ist, cst) = (summed(ist, 0), summed(cst, 2));
        let steps = values[n + 4].round() as usize;
        let stop_any = values[n + 5] > 0.0;
        Ok(Some((self.window(&values, ist, cst, steps), stop_any)))
    }

    /// The window of read `values` (`[terms, counts, …]`), and a new window started.
    fn window(
        &mut self,
        values: &[f64],
        host_ist: Option<HostCounts>,
        host_cst: Option<HostCounts>,
        steps: usize,
    ) -> WindowSums {
        let terms = TERMS
            .iter()
            .zip(values)
            .zip(self.active)
            .filter(|(_, active)| *active)
            .map(|((name, v), _)| (*name, *v))
            .collect();
        let quality = |host: Option<HostCounts>, count: f64, correct: f64| {
            host.map(|h| PseudoLabelQuality {
                count: count.round() as usize,
                correct: correct.round() as usize,
                hidden_positives: h.hidden_positives,
                unknown: h.unknown,
                ..PseudoLabelQuality::default()
            })
        };
        let n = TERMS.len();
        let window = WindowSums {
            steps,
            first_batch: self.first_batch,
            last_batch: self.last_batch,
            terms,
            ist: quality(host_ist, values[n], values[n + 1]),
            cst: quality(host_cst, values[n + 2], values[n + 3]),
        };
        *self = Self::default();
        window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TB = burn::backend::Flex;

    fn losses(total: f32, targets: Option<[f32; 4]>) -> HstLosses<TB> {
        let device = Default::default();
        let s = |v: f32| Tensor::<TB, 1>::from_floats([v], &device);
        HstLosses {
            total: s(total),
            partial_bce: s(total / 2.0),
            ist_bce: None,
            cst_bce: None,
            ist_asl: Some(s(1.0)),
            instance: None,
            prototype: None,
            dtl_ist: None,
            dtl_cst: None,
            ramp: 1.0,
            ist_soft: None,
            ist_targets: targets.map(|t| Tensor::<TB, 1>::from_floats(t, &device).reshape([2, 2])),
            cst_soft: None,
            cst_targets: None,
        }
    }

    #[test]
    fn a_window_sums_terms_and_counts_pseudo_labels_on_unknown_entries() {
        let device = Default::default();
        let partial = [1.0f32, 0.0, 0.0, -1.0];
        let full = [1.0f32, 1.0, -1.0, -1.0];
        let pt = Tensor::<TB, 1>::from_floats(partial, &device).reshape([2, 2]);
        let ft = Tensor::<TB, 1>::from_floats(full, &device).reshape([2, 2]);
        let mut log = StepLog::<TB>::default();
        assert!(log.read().is_none());
        // Unknown entries (0,1) full + and (1,0) full −; pseudo + on both → 2 predicted, 1 correct.
        log.push(
            3,
            &losses(2.0, Some([1.0, 1.0, 1.0, -1.0])),
            (&partial, &pt),
            (&full, &ft),
        );
        log.push(
            4,
            &losses(4.0, Some([1.0, -1.0, -1.0, 1.0])),
            (&partial, &pt),
            (&full, &ft),
        );
        assert_eq!(log.pending(), 2);
        let w = log.read().unwrap();
        assert_eq!((w.steps, w.first_batch, w.last_batch), (2, 3, 4));
        assert_eq!(
            w.terms,
            vec![("total", 6.0), ("partial_bce", 3.0), ("ist_asl", 2.0)]
        );
        let q = w.ist.unwrap();
        assert_eq!(
            (q.count, q.correct, q.unknown, q.hidden_positives),
            (2, 1, 4, 2)
        );
        assert!(w.cst.is_none());
        assert_eq!(log.pending(), 0);
        assert!(log.read().is_none());
    }
}
