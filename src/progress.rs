//! Progress bars (indicatif) for the CLI, fed by the trainer's [`TrainObserver`] callbacks.

use hst_train::{EpochLog, Phase, TrainObserver};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Shows one bar for the epochs and one for the batches of the current phase, and prints a line per epoch.
pub struct ProgressObserver {
    multi: MultiProgress,
    epochs: ProgressBar,
    batches: Option<ProgressBar>,
}

impl ProgressObserver {
    /// Bars for a run of `epochs` epochs.
    pub fn new(epochs: usize) -> Self {
        let multi = MultiProgress::new();
        let epochs_bar = multi.add(ProgressBar::new(epochs as u64));
        epochs_bar.set_style(
            ProgressStyle::with_template(
                "epochs {bar:30.green} {pos}/{len} [{elapsed_precise}] {msg}",
            )
            .expect("valid template"),
        );
        Self {
            multi,
            epochs: epochs_bar,
            batches: None,
        }
    }
}

impl TrainObserver for ProgressObserver {
    fn phase_start(&mut self, phase: Phase, epoch: usize, batches: usize) {
        self.epochs.set_position(epoch as u64);
        let bar = self.multi.add(ProgressBar::new(batches as u64));
        let name = match phase {
            Phase::Prototypes => "prototypes",
            Phase::Train => "train",
            Phase::Eval => "eval",
        };
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{name:>10} {{bar:30.cyan}} {{pos}}/{{len}} [{{elapsed}}<{{eta}}, {{per_sec}}] {{msg}}"
            ))
            .expect("valid template"),
        );
        self.batches = Some(bar);
    }

    fn batch_done(&mut self, _phase: Phase, loss: Option<f64>) {
        if let Some(bar) = &self.batches {
            if let Some(loss) = loss {
                bar.set_message(format!("loss {loss:.4}"));
            }
            bar.inc(1);
        }
    }

    fn phase_end(&mut self, _phase: Phase) {
        if let Some(bar) = self.batches.take() {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }

    fn epoch_done(&mut self, log: &EpochLog) {
        let r = &log.record;
        let pseudo = |q: &Option<hst_train::metrics::PseudoLabelQuality>| {
            q.as_ref()
                .map(|q| format!("{} (P {:.2} R {:.2})", q.count, q.precision, q.recall))
                .unwrap_or_else(|| "-".into())
        };
        let _ = self.multi.println(format!(
            "epoch {:>2}: loss {:.4}  mAP {:.2}  OF1 {:.2}  CF1 {:.2}  tau {:.4}/{:.4}  pseudo IST {} CST {}  {:.0} img/s  {:.0}s",
            r.epoch,
            r.losses.get("total").copied().unwrap_or(f64::NAN),
            100.0 * r.map,
            100.0 * r.of1,
            100.0 * r.cf1,
            r.tau_ist,
            r.tau_cst,
            pseudo(&r.ist_pseudo),
            pseudo(&r.cst_pseudo),
            log.train_images_per_second,
            log.seconds
        ));
        self.epochs.set_position(r.epoch as u64 + 1);
        self.epochs.set_message(format!("mAP {:.2}", 100.0 * r.map));
    }
}

impl Drop for ProgressObserver {
    fn drop(&mut self) {
        self.epochs.finish_and_clear();
    }
}
