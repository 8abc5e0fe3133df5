//! The PyO3 layer: module `server._engine`. Thin on purpose — decode, apply
//! and encode run in Rust with the GIL released; Python objects are built
//! only afterwards, from the plain result vectors.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::codec;

// The engine allocates and frees a few small objects per order and one large
// buffer per batch; mimalloc keeps that off glibc's consolidation paths.
// Python objects are unaffected (they use Python's allocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use crate::domain::engine::Engine as DomainEngine;

create_exception!(
    _engine,
    EngineError,
    PyException,
    "Base of every engine error."
);
create_exception!(
    _engine,
    BatchDecodeError,
    EngineError,
    "The batch bytes are not a valid EngineBatch."
);
create_exception!(
    _engine,
    SnapshotError,
    EngineError,
    "Snapshot or restore input is invalid."
);
create_exception!(
    _engine,
    EngineStateError,
    EngineError,
    "Wrong commit / rollback seq, snapshot with pending batches."
);
create_exception!(
    _engine,
    EngineBugError,
    EngineError,
    "A caught Rust panic or a broken invariant: a bug."
);

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

/// Runs `f`, turning a panic into EngineBugError.
fn guarded<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(EngineBugError::new_err(format!(
            "engine panicked: {}",
            panic_text(payload.as_ref())
        ))),
    }
}

/// What one `Engine.apply` produced. The result is complete when `apply`
/// returns (as plain Rust vectors); each list attribute becomes a Python list
/// on first access and is then cached, so a caller pays only for the views it
/// reads.
#[pyclass(frozen, module = "server._engine")]
pub struct BatchOutput {
    #[pyo3(get)]
    batch_seq: u64,
    raw: codec::BatchOutput,
    responses: PyOnceLock<Py<PyList>>,
    replayed: PyOnceLock<Py<PyList>>,
    order_rows: PyOnceLock<Py<PyList>>,
    stock_rows: PyOnceLock<Py<PyList>>,
    location_rows: PyOnceLock<Py<PyList>>,
    region_rows: PyOnceLock<Py<PyList>>,
    events: PyOnceLock<Py<PyList>>,
}

type Range = std::ops::Range<usize>;

impl BatchOutput {
    fn new(raw: codec::BatchOutput) -> Self {
        BatchOutput {
            batch_seq: raw.batch_seq,
            raw,
            responses: PyOnceLock::new(),
            replayed: PyOnceLock::new(),
            order_rows: PyOnceLock::new(),
            stock_rows: PyOnceLock::new(),
            location_rows: PyOnceLock::new(),
            region_rows: PyOnceLock::new(),
            events: PyOnceLock::new(),
        }
    }

    fn text<'py>(&self, py: Python<'py>, r: &Range) -> Bound<'py, PyString> {
        PyString::new(py, self.raw.text(r))
    }

    fn bytes<'py>(&self, py: Python<'py>, r: &Range) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.raw.bytes(r))
    }

    /// The cached list of `cell`, built by `build` on first use.
    fn cached<'py>(
        &self,
        py: Python<'py>,
        cell: &PyOnceLock<Py<PyList>>,
        build: impl FnOnce(&Bound<'py, PyList>) -> PyResult<()>,
    ) -> PyResult<Bound<'py, PyList>> {
        let list = cell.get_or_try_init(py, || {
            guarded(|| {
                let list = PyList::empty(py);
                build(&list)?;
                Ok(list.unbind())
            })
        })?;
        Ok(list.bind(py).clone())
    }
}

#[pymethods]
impl BatchOutput {
    /// Per command: (grpc code, response message or OrderError bytes).
    #[getter]
    fn responses<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.cached(py, &self.responses, |list| {
            for r in &self.raw.responses {
                list.append((r.code, self.bytes(py, &r.payload)))?;
            }
            Ok(())
        })
    }

    #[getter]
    fn replayed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.cached(py, &self.replayed, |list| {
            for r in &self.raw.responses {
                list.append(r.replayed)?;
            }
            Ok(())
        })
    }

    #[getter]
    fn order_rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.cached(py, &self.order_rows, |list| {
            for o in &self.raw.order_rows {
                list.append((
                    self.text(py, &o.order_id),
                    self.text(py, &o.customer_id),
                    o.status,
                    o.version,
                    o.create_ms,
                    o.update_ms,
                    self.bytes(py, &o.order),
                ))?;
            }
            Ok(())
        })
    }

    #[getter]
    fn stock_rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.cached(py, &self.stock_rows, |list| {
            for s in &self.raw.stock_rows {
                list.append((
                    self.text(py, &s.sku),
                    self.text(py, &s.location_id),
                    s.on_hand,
                    s.reserved,
                    s.version,
                ))?;
            }
            Ok(())
        })
    }

    #[getter]
    fn location_rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.cached(py, &self.location_rows, |list| {
            for l in &self.raw.location_rows {
                list.append(self.bytes(py, l))?;
            }
            Ok(())
        })
    }

    #[getter]
    fn region_rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.cached(py, &self.region_rows, |list| {
            for g in &self.raw.region_rows {
                list.append(self.bytes(py, g))?;
            }
            Ok(())
        })
    }

    /// (subject, event_id, payload) in the order the events happened.
    #[getter]
    fn events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.cached(py, &self.events, |list| {
            // A handful of distinct subjects: one Python string each.
            let mut subjects: Vec<(&'static str, Bound<'py, PyString>)> = Vec::new();
            for e in &self.raw.events {
                let subject = match subjects.iter().find(|(s, _)| *s == e.subject) {
                    Some((_, p)) => p.clone(),
                    None => {
                        let p = PyString::new(py, e.subject);
                        subjects.push((e.subject, p.clone()));
                        p
                    }
                };
                list.append((
                    subject,
                    self.text(py, &e.event_id),
                    self.bytes(py, &e.payload),
                ))?;
            }
            Ok(())
        })
    }

    /// The whole EngineBatchResult, serialised.
    fn encode<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        guarded(|| Ok(PyBytes::new(py, &self.raw.encode())))
    }

    /// The serialised JournalEntry {batch_seq, events}.
    fn journal<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        guarded(|| Ok(PyBytes::new(py, &self.raw.journal())))
    }

    fn __repr__(&self) -> String {
        format!(
            "BatchOutput(batch_seq={}, responses={}, order_rows={}, stock_rows={}, events={})",
            self.batch_seq,
            self.raw.responses.len(),
            self.raw.order_rows.len(),
            self.raw.stock_rows.len(),
            self.raw.events.len()
        )
    }
}

/// The allocation engine of one inventory partition.
#[pyclass(module = "server._engine")]
pub struct Engine {
    inner: DomainEngine,
    /// Set when a panic interrupted a call: the state may be half-changed,
    /// so the engine refuses further work (restart from the store).
    poisoned: Option<String>,
}

impl Engine {
    fn check(&self) -> PyResult<()> {
        match &self.poisoned {
            Some(why) => Err(EngineBugError::new_err(format!(
                "engine unusable after an earlier panic: {why}"
            ))),
            None => Ok(()),
        }
    }

    /// Runs a state-changing call; a panic poisons the engine.
    fn mutate<T>(&mut self, f: impl FnOnce(&mut DomainEngine) -> PyResult<T>) -> PyResult<T> {
        self.check()?;
        let inner = &mut self.inner;
        match catch_unwind(AssertUnwindSafe(|| f(inner))) {
            Ok(r) => r,
            Err(payload) => {
                let text = panic_text(payload.as_ref());
                self.poisoned = Some(text.clone());
                Err(EngineBugError::new_err(format!("engine panicked: {text}")))
            }
        }
    }
}

#[pymethods]
impl Engine {
    #[new]
    fn new() -> Self {
        Engine {
            inner: DomainEngine::new(),
            poisoned: None,
        }
    }

    /// Applies one serialised EngineBatch (GIL released while it runs).
    fn apply(&mut self, py: Python<'_>, batch: &[u8]) -> PyResult<BatchOutput> {
        let raw = self.mutate(|engine| {
            py.detach(|| {
                catch_unwind(AssertUnwindSafe(|| codec::apply(engine, batch)))
                    .map_err(|p| panic_text(p.as_ref()))
            })
            .map_err(|text| EngineBugError::new_err(format!("engine panicked: {text}")))?
            .map_err(|e| BatchDecodeError::new_err(e.0))
        });
        if let Err(e) = &raw {
            if e.is_instance_of::<EngineBugError>(py) && self.poisoned.is_none() {
                self.poisoned = Some(e.to_string());
            }
        }
        Ok(BatchOutput::new(raw?))
    }

    /// Batches up to and including `batch_seq` are durable.
    fn commit(&mut self, batch_seq: u64) -> PyResult<()> {
        self.mutate(|e| {
            e.commit(batch_seq)
                .map_err(|err| EngineStateError::new_err(err.0))
        })
    }

    /// Undoes batch `batch_seq` and every later pending batch.
    fn rollback(&mut self, batch_seq: u64) -> PyResult<()> {
        self.mutate(|e| {
            e.rollback(batch_seq)
                .map_err(|err| EngineStateError::new_err(err.0))
        })
    }

    fn pending(&self) -> PyResult<Vec<u64>> {
        self.check()?;
        guarded(|| Ok(self.inner.pending()))
    }

    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.check()?;
        let bytes =
            guarded(|| codec::snapshot(&self.inner).map_err(|e| EngineStateError::new_err(e.0)))?;
        Ok(PyBytes::new(py, &bytes))
    }

    #[staticmethod]
    fn from_snapshot(data: &[u8]) -> PyResult<Engine> {
        guarded(|| {
            let inner = codec::from_snapshot(data).map_err(SnapshotError::new_err)?;
            Ok(Engine {
                inner,
                poisoned: None,
            })
        })
    }

    /// Replaces the whole state with one rebuilt from persisted rows.
    #[pyo3(signature = (regions, locations, stock, orders, batch_seq = 0))]
    fn restore(
        &mut self,
        regions: Vec<Vec<u8>>,
        locations: Vec<Vec<u8>>,
        stock: Vec<Vec<u8>>,
        orders: Vec<Vec<u8>>,
        batch_seq: u64,
    ) -> PyResult<()> {
        let engine = guarded(|| {
            codec::restore(
                &slices(&regions),
                &slices(&locations),
                &slices(&stock),
                &slices(&orders),
                batch_seq,
            )
            .map_err(SnapshotError::new_err)
        })?;
        self.inner = engine;
        self.poisoned = None;
        Ok(())
    }

    /// Makes room for `orders` more orders and faults that memory in now, with
    /// the GIL released (see `Engine::reserve_orders`).
    fn reserve_orders(&mut self, py: Python<'_>, orders: usize) -> PyResult<()> {
        self.mutate(|engine| {
            py.detach(|| engine.reserve_orders(orders));
            Ok(())
        })
    }

    /// Raises EngineBugError describing the first broken invariant.
    fn check_invariants(&self) -> PyResult<()> {
        self.check()?;
        guarded(|| {
            self.inner
                .check_invariants()
                .map_err(EngineBugError::new_err)
        })
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.check()?;
        let st = &self.inner.state;
        let d = PyDict::new(py);
        d.set_item("orders", st.orders.len())?;
        d.set_item(
            "live_orders",
            st.orders.values().filter(|o| o.status.is_live()).count(),
        )?;
        d.set_item(
            "stock_rows",
            st.skus.iter().map(|(_, _, e)| e.cells.len()).sum::<usize>(),
        )?;
        d.set_item(
            "locations",
            st.locations.iter().filter(|(_, _, r)| r.is_some()).count(),
        )?;
        d.set_item(
            "regions",
            st.regions
                .iter()
                .filter(|(_, _, e)| e.row.is_some())
                .count(),
        )?;
        d.set_item("pending_batches", self.inner.pending().len())?;
        d.set_item("batch_seq", self.inner.batch_seq())?;
        Ok(d)
    }
}

fn slices(rows: &[Vec<u8>]) -> Vec<&[u8]> {
    rows.iter().map(Vec::as_slice).collect()
}

/// The CPU level this build was compiled for (server/engine_build.py chooses
/// between builds): "x86-64-v4" when AVX-512 code may run, else "baseline".
const BUILD_CPU_LEVEL: &str = if cfg!(target_feature = "avx512f") {
    "x86-64-v4"
} else {
    "baseline"
};

/// The profile this build was optimised with (deploy/build_engine.sh sets
/// ORDERS_ENGINE_PROFILE to its name), or "none" for a build without one.
const BUILD_PROFILE: &str = match option_env!("ORDERS_ENGINE_PROFILE") {
    Some(name) => name,
    None => "none",
};

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("BUILD_CPU_LEVEL", BUILD_CPU_LEVEL)?;
    m.add("BUILD_PROFILE", BUILD_PROFILE)?;
    m.add("EngineError", py.get_type::<EngineError>())?;
    m.add("BatchDecodeError", py.get_type::<BatchDecodeError>())?;
    m.add("SnapshotError", py.get_type::<SnapshotError>())?;
    m.add("EngineStateError", py.get_type::<EngineStateError>())?;
    m.add("EngineBugError", py.get_type::<EngineBugError>())?;
    m.add_class::<Engine>()?;
    m.add_class::<BatchOutput>()?;
    Ok(())
}
