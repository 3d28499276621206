//! The layer pipeline a quantization runs on: calibration steps through the decoder layer by layer on the
//! calling thread (which drives the GPU), and each layer whose statistics are complete is handed to a
//! background job (quantize and write) while the next layers calibrate. The pipeline owns what every such
//! run needs and must get right once: at most [`LayerPipeline::JOBS`] jobs at once, results taken in layer
//! order, the first error reported (not a follow-on one), stage timing, cancellation between layers and the
//! last cancellation check right before the output is published.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::ScopedJoinHandle;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::model::layers::{LayerStream, Throttle};
use crate::model::observe::Observers;
use crate::threads::{background_priority, lock};

/// What the pipeline reports, in order: calibration moving, and each layer job's result (in layer order).
#[derive(Debug, Clone, Copy)]
pub enum Progress<D> {
    /// `batch` batches of the next layer (`layer` layers done) have run (throttled).
    Batch { layer: usize, batch: usize },
    /// Layer `layer` (0-based) has seen every batch.
    Calibrated { layer: usize },
    /// A layer job's result.
    Done(D),
}

/// Seconds spent per stage, summed over the threads that ran it.
#[derive(Debug, Default)]
pub struct StageClock {
    calibrate: Mutex<f64>,
    quantize: Mutex<f64>,
    write: Mutex<f64>,
}

impl StageClock {
    /// Runs `work`, adding its time to `stage`'s.
    pub fn time<T>(&self, stage: Stage, work: impl FnOnce() -> T) -> T {
        let clock = Instant::now();
        let result = work();
        self.add(stage, clock.elapsed().as_secs_f64());
        result
    }

    /// Adds `seconds` to `stage`'s time.
    pub fn add(&self, stage: Stage, seconds: f64) {
        let total = match stage {
            Stage::Calibrate => &self.calibrate,
            Stage::Quantize => &self.quantize,
            Stage::Write => &self.write,
        };
        *lock(total) += seconds;
    }

    /// `(calibrate, quantize, write)` seconds so far.
    pub fn seconds(&self) -> (f64, f64, f64) {
        (*lock(&self.calibrate), *lock(&self.quantize), *lock(&self.write))
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Calibrate,
    Quantize,
    Write,
}

/// One quantization run's pipeline (see the module documentation).
pub struct LayerPipeline<'a> {
    cancel: &'a AtomicBool,
    first_error: Mutex<Option<Error>>,
    pub clock: StageClock,
}

impl<'a> LayerPipeline<'a> {
    /// Layer jobs at most in flight: one writing while the next quantizes.
    pub const JOBS: usize = 2;

    pub fn new(cancel: &'a AtomicBool) -> Self {
        LayerPipeline { cancel, first_error: Mutex::new(None), clock: StageClock::default() }
    }

    /// A job's result, remembering its error if it is the first: after the writer fails, a job still running
    /// fails too (the writer is closed), and the error to report is the writer's.
    pub fn record<T>(&self, result: Result<T>) -> Result<T> {
        result.map_err(|error| {
            let mut first = lock(&self.first_error);
            match *first {
                None => {
                    *first = Some(error);
                    Error::internal("a background job failed (its error is reported instead)")
                }
                Some(_) => error,
            }
        })
    }

    /// The error to report for a failed job: the one that happened first.
    pub fn reported(&self, error: Error) -> Error {
        lock(&self.first_error).take().unwrap_or(error)
    }

    /// `E_CANCELLED` once the caller asked to stop.
    pub fn cancelled(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// Runs `stream` to its end. `side` runs on a thread of its own meanwhile (the tensors copied as they
    /// are); each finished layer goes to `job` (with the observers as they stand after it) on a background
    /// thread. `events` follows calibration and receives each job's result, in layer order.
    pub fn run<D: Send>(
        &self,
        stream: &mut LayerStream<'_>,
        side: impl FnOnce() -> Result<()> + Send,
        job: &(dyn Fn(usize, Observers) -> Result<D> + Sync),
        events: &mut dyn FnMut(Progress<D>) -> Result<()>,
    ) -> Result<()> {
        std::thread::scope(|scope| -> Result<()> {
            let side = scope.spawn(move || {
                background_priority();
                self.record(side())
            });
            let mut pending: VecDeque<ScopedJoinHandle<'_, Result<D>>> = VecDeque::with_capacity(Self::JOBS);
            let finish = |handle: ScopedJoinHandle<'_, Result<D>>,
                          events: &mut dyn FnMut(Progress<D>) -> Result<()>|
             -> Result<()> {
                let result = handle.join().unwrap_or_else(|_| Err(Error::internal("a layer job panicked")));
                events(Progress::Done(result.map_err(|error| self.reported(error))?))
            };
            // Waits for the oldest jobs until a new one may start.
            let make_room = |pending: &mut VecDeque<ScopedJoinHandle<'_, Result<D>>>,
                             events: &mut dyn FnMut(Progress<D>) -> Result<()>|
             -> Result<()> {
                while pending.len() >= Self::JOBS {
                    if let Some(handle) = pending.pop_front() {
                        finish(handle, events)?;
                    }
                }
                Ok(())
            };
            let mut throttle = Throttle::new(Throttle::WITHIN_LAYER);
            let mut calibrated = 0;
            // Where a layer's experts are quantized as it loads, its output exists from its step on (until its
            // job writes it): a step then waits for a job slot first, so that at most `JOBS` layers' output
            // wait in memory, not one more, and the next layer is not read ahead meanwhile. Otherwise a job
            // makes its layer's output itself, and the step runs while it waits for a slot.
            let outputs_in_step = stream.quantizes_resident();
            loop {
                self.cancelled()?;
                if outputs_in_step {
                    make_room(&mut pending, events)?;
                }
                // A failure of the progress callback ends the run at the layer's end.
                let mut failed = Ok(());
                let mut within = |batch| {
                    if failed.is_ok() && throttle.ready() {
                        failed = events(Progress::Batch { layer: calibrated, batch });
                    }
                };
                let Some(layer) = self.clock.time(Stage::Calibrate, || stream.step(&mut within))? else { break };
                failed?;
                calibrated = layer + 1;
                events(Progress::Calibrated { layer })?;
                make_room(&mut pending, events)?;
                let observers = stream.observers.clone();
                pending.push_back(scope.spawn(move || {
                    background_priority();
                    job(layer, observers)
                }));
            }
            while let Some(handle) = pending.pop_front() {
                finish(handle, events)?;
            }
            let side = side.join().unwrap_or_else(|_| Err(Error::internal("the side job panicked")));
            side.map_err(|error| self.reported(error))
        })
    }

    /// Publishes through `publish` unless the run was cancelled meanwhile: the last check, once everything
    /// else is done (after publishing, the run has succeeded whatever the caller does).
    pub fn publish<T>(&self, publish: impl FnOnce() -> Result<T>) -> Result<T> {
        self.cancelled()?;
        publish()
    }
}
