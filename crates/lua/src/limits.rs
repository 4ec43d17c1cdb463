//! What a VM and a request may use: a memory limit per VM, an execution budget per request
//! (instructions counted by a hook, and time spent running Lua), and the sandbox switch.
//!
//! LuaJIT never calls a hook from inside a compiled trace, and a count hook does not keep it
//! from compiling one (checked in `tests/limits.rs`): a loop that became a trace runs to its
//! end without a check. So a VM with a budget runs with the JIT off, which makes every Lua
//! instruction pass through the interpreter's hook dispatch. See `docs/lua.md`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mlua::{HookTriggers, Lua, VmState};

/// How many Lua instructions run between two checks of the budget: the most a budget can be
/// overrun by, in instructions, and what the check costs (one hook call per this many).
pub const CHECK_EVERY: u32 = 1000;

/// Limits of one VM and of the requests it runs. `Default`: a 1 GiB memory limit, no
/// execution budget (the JIT stays on), no sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuaLimits {
    /// Bytes the VM's heap may hold, all requests together. An allocation past it fails
    /// ("not enough memory"); the request that hit it ends with an error and the VM asks to be
    /// replaced ([`crate::LuaVm::needs_recycle`]). `None`: no limit.
    pub memory: Option<usize>,
    /// Lua VM instructions one request may run, all its phases together. `None`: no limit.
    pub instructions: Option<u64>,
    /// Time one request may spend running Lua (and the Rust and C functions Lua calls), all
    /// its phases together; time waiting on I/O, sleeps or timers is not counted.
    pub cpu_time: Option<Duration>,
    /// Refuse what untrusted code must not do (see [`Sandbox`]). `None`: everything
    /// OpenResty allows.
    pub sandbox: Option<Sandbox>,
}

impl Default for LuaLimits {
    fn default() -> Self {
        LuaLimits {
            memory: Some(DEFAULT_MEMORY),
            instructions: None,
            cpu_time: None,
            sandbox: None,
        }
    }
}

/// The default memory limit: far above what a proxy's scripts hold, low enough that a
/// runaway allocation fails one request instead of exhausting the machine.
pub const DEFAULT_MEMORY: usize = 1 << 30;

impl LuaLimits {
    /// No limit at all: OpenResty's behaviour.
    pub fn unlimited() -> Self {
        LuaLimits {
            memory: None,
            instructions: None,
            cpu_time: None,
            sandbox: None,
        }
    }

    /// For tenant code: 256 MiB per VM, 1 s of Lua time and 100 million instructions per
    /// request, sandboxed with no readable or writable path.
    pub fn untrusted() -> Self {
        LuaLimits {
            memory: Some(256 << 20),
            instructions: Some(100_000_000),
            cpu_time: Some(Duration::from_secs(1)),
            sandbox: Some(Sandbox::default()),
        }
    }

    /// Whether requests have an execution budget (and so the VM runs without the JIT).
    pub fn has_budget(&self) -> bool {
        self.instructions.is_some() || self.cpu_time.is_some()
    }
}

/// What sandboxed code may not do: run programs, exit, touch the environment, files outside
/// `allowed_paths`, `ffi`, `debug`, C modules, bytecode. See `sandbox.rs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// Directories (or files) `io.open` and `io.lines` may open, read or write under; made
    /// canonical when the VM starts, a path that does not exist then is dropped.
    pub allowed_paths: Vec<PathBuf>,
}

/// Which limit a request went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Instructions(u64),
    CpuTime(Duration),
    Memory(usize),
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exceeded::Instructions(n) => write!(
                f,
                "Lua execution budget exceeded: more than {n} instructions in this request"
            ),
            Exceeded::CpuTime(t) => write!(
                f,
                "Lua execution budget exceeded: more than {} ms running Lua in this request",
                t.as_millis()
            ),
            Exceeded::Memory(n) => write!(
                f,
                "Lua memory limit exceeded: the VM may hold {n} bytes; it will be replaced"
            ),
        }
    }
}

impl std::error::Error for Exceeded {}

/// What one request (or one timer run) has spent so far.
#[derive(Debug)]
pub struct Budget {
    instructions: Cell<u64>,
    /// Whether polls are timed: only a CPU-time limit needs it, and reading the clock twice
    /// per poll is a measurable part of a short Lua phase.
    timed: Cell<bool>,
    /// Time in Lua during earlier polls.
    spent: Cell<Duration>,
    /// When the poll running now began, if one is.
    since: Cell<Option<Instant>>,
    exceeded: Cell<Option<Exceeded>>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            instructions: Cell::new(0),
            timed: Cell::new(true),
            spent: Cell::new(Duration::ZERO),
            since: Cell::new(None),
            exceeded: Cell::new(None),
        }
    }
}

impl Budget {
    /// Sets whether the time Lua runs is counted (see [`BudgetLimits::cpu_time`]).
    pub fn set_timed(&self, timed: bool) {
        self.timed.set(timed);
    }

    pub fn exceeded(&self) -> Option<Exceeded> {
        self.exceeded.get()
    }

    pub fn instructions(&self) -> u64 {
        self.instructions.get()
    }

    /// Time spent running Lua, the poll running now included.
    pub fn cpu_time(&self) -> Duration {
        self.spent.get() + self.since.get().map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Records that `why` ended the request; the first reason stays.
    pub fn exceed(&self, why: Exceeded) {
        if self.exceeded.get().is_none() {
            self.exceeded.set(Some(why));
        }
    }

    /// Compares what was spent with `limits`, recording the first limit passed.
    pub fn check(&self, limits: &BudgetLimits) -> Option<Exceeded> {
        if self.exceeded.get().is_none() {
            if let Some(max) = limits.instructions
                && self.instructions.get() > max
            {
                self.exceed(Exceeded::Instructions(max));
            } else if let Some(max) = limits.cpu_time
                && self.cpu_time() > max
            {
                self.exceed(Exceeded::CpuTime(max));
            }
        }
        self.exceeded.get()
    }
}

/// The budget's part of [`LuaLimits`], small enough to copy into the hook.
#[derive(Debug, Clone, Copy, Default)]
pub struct BudgetLimits {
    pub instructions: Option<u64>,
    pub cpu_time: Option<Duration>,
}

thread_local! {
    /// The budget of the Lua code running on this worker now.
    static CURRENT: RefCell<Option<Rc<Budget>>> = const { RefCell::new(None) };
}

/// The budget of the code running now, if any.
pub fn current() -> Option<Rc<Budget>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Polls `poll` as `budget`'s code: it is the current budget, and the time the poll takes is
/// charged to it.
pub fn metered<R>(budget: &Rc<Budget>, poll: impl FnOnce() -> R) -> R {
    let previous = CURRENT.with(|c| c.replace(Some(budget.clone())));
    // A poll inside another of the same budget (not expected) must not count twice.
    let outer = budget.timed.get() && budget.since.get().is_none();
    if outer {
        budget.since.set(Some(Instant::now()));
    }
    let out = poll();
    if outer && let Some(s) = budget.since.take() {
        budget.spent.set(budget.spent.get() + s.elapsed());
    }
    CURRENT.with(|c| *c.borrow_mut() = previous);
    out
}

/// A future run with its own budget (timers, which belong to no request).
pub struct Metered<F> {
    pub budget: Rc<Budget>,
    pub inner: Pin<Box<F>>,
}

impl<F: Future> Metered<F> {
    pub fn new(inner: F) -> Self {
        Metered {
            budget: Rc::new(Budget::default()),
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let budget = self.budget.clone();
        metered(&budget, || self.inner.as_mut().poll(cx))
    }
}

/// Installs the budget's count hook and turns the JIT off for good in this VM: a compiled
/// trace would never reach the hook.
pub fn install_budget(lua: &Lua, limits: BudgetLimits) -> mlua::Result<()> {
    lua.load(
        r#"
        jit.off()
        jit.flush()
        -- Turning it back on would let a loop compile past the budget's hook.
        jit.on = function() end
        "#,
    )
    .set_name("=outpost.budget")
    .exec()?;
    lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(CHECK_EVERY),
        move |_, _| {
            let Some(budget) = current() else {
                return Ok(VmState::Continue);
            };
            budget
                .instructions
                .set(budget.instructions.get() + u64::from(CHECK_EVERY));
            match budget.check(&limits) {
                // Raised again at every check once exceeded, wherever the code went on.
                Some(why) => Err(mlua::Error::external(why)),
                None => Ok(VmState::Continue),
            }
        },
    )
}

/// The limit an error says was passed: a budget the hook raised, or (when the VM has a
/// memory limit) LuaJIT's and mlua's out-of-memory error.
pub fn exceeded_in(e: &mlua::Error, memory: Option<usize>) -> Option<Exceeded> {
    match e {
        mlua::Error::ExternalError(x) => x.downcast_ref::<Exceeded>().copied(),
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            exceeded_in(cause, memory)
        }
        mlua::Error::MemoryError(_) => memory.map(Exceeded::Memory),
        mlua::Error::RuntimeError(m) if is_oom_message(m.as_bytes()) => {
            memory.map(Exceeded::Memory)
        }
        _ => None,
    }
}

/// LuaJIT's out-of-memory error, as `pcall` sees it.
pub fn is_oom_message(m: &[u8]) -> bool {
    m == b"not enough memory"
}

/// The Lua function `aborted(err)` that `pcall`, `xpcall` and `coroutine.resume` ask before
/// handing an error to the script: truthy when the request is over its budget or `err` is
/// the memory limit's, so the error goes on up instead of being caught. Hitting the memory
/// limit also marks the VM for replacement (`recycle`).
pub fn aborted_fn(
    lua: &Lua,
    memory: Option<usize>,
    recycle: Rc<Cell<bool>>,
) -> mlua::Result<mlua::Function> {
    lua.create_function(move |_, err: mlua::Value| {
        let Some(budget) = current() else {
            return Ok(false);
        };
        if budget.exceeded().is_some() {
            return Ok(true);
        }
        let oom = match &err {
            mlua::Value::Error(e) => exceeded_in(e, memory),
            mlua::Value::String(s) if is_oom_message(&s.as_bytes()) => memory.map(Exceeded::Memory),
            _ => None,
        };
        match oom {
            Some(why) => {
                budget.exceed(why);
                if matches!(why, Exceeded::Memory(_)) {
                    recycle.set(true);
                }
                Ok(true)
            }
            None => Ok(false),
        }
    })
}
