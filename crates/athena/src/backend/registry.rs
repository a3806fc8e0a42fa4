//! How backends are offered to the loader: each provider says whether it can run here and,
//! if so, loads a model. The loader tries them in order and reports why each one was skipped.

use super::contract::Backend;
use super::spec::LoadSpec;
use crate::error::Result;
use crate::options::BackendKind;

/// Whether a backend can run in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Compiled in, and its device works.
    Available,
    /// Not part of this build.
    NotCompiled(String),
    /// Compiled in, but no usable device.
    NoDevice(String),
}

/// A backend as the loader sees it.
pub trait BackendProvider: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Whether it can run here.
    fn availability(&self) -> Availability;
    /// Loads what `spec` asks for, calling `on_layer(done, total)` as the decoder layers
    /// load. A provider that cannot report progress loads without calling it.
    fn load_reporting(
        &self,
        spec: &LoadSpec,
        on_layer: &mut dyn FnMut(usize, usize),
    ) -> Result<Box<dyn Backend>>;
    /// [`Self::load_reporting`] without progress.
    fn load(&self, spec: &LoadSpec) -> Result<Box<dyn Backend>> {
        self.load_reporting(spec, &mut |_, _| {})
    }
}
