//! Lua phase handlers from the config, compiled (syntax-checked) once per config: inline code,
//! or a module whose returned function runs.

use std::sync::Arc;

use outpost_lua::Phase;
use outpost_proto::pb;

#[derive(Debug)]
pub struct LuaChunk {
    /// Chunk name in error messages and tracebacks, e.g. `site.access`.
    pub name: String,
    pub code: String,
}

/// The code to run per phase; an application's own first, then its matching rules'.
#[derive(Debug, Default, Clone)]
pub struct LuaHandlers {
    pub rewrite: Chunks,
    pub access: Chunks,
    pub content: Chunks,
    pub header_filter: Chunks,
    pub body_filter: Chunks,
    pub log: Chunks,
}

/// One phase's chunks, in order. Shared: what a request takes along (a streamed content
/// phase, body_filter, log) is a reference count, not a copy of the list.
pub type Chunks = Arc<[Arc<LuaChunk>]>;

fn joined(a: &Chunks, b: &Chunks) -> Chunks {
    a.iter().chain(b.iter()).cloned().collect()
}

impl LuaHandlers {
    pub fn is_empty(&self) -> bool {
        self.rewrite.is_empty()
            && self.access.is_empty()
            && self.content.is_empty()
            && self.header_filter.is_empty()
            && self.body_filter.is_empty()
            && self.log.is_empty()
    }

    pub fn phase(&self, p: Phase) -> &[Arc<LuaChunk>] {
        match p {
            Phase::Rewrite => &self.rewrite,
            Phase::Access => &self.access,
            Phase::Content => &self.content,
            Phase::HeaderFilter => &self.header_filter,
            Phase::BodyFilter => &self.body_filter,
            Phase::Log => &self.log,
            _ => &[],
        }
    }

    pub fn extend(&mut self, other: &LuaHandlers) {
        self.rewrite = joined(&self.rewrite, &other.rewrite);
        self.access = joined(&self.access, &other.access);
        self.content = joined(&self.content, &other.content);
        self.header_filter = joined(&self.header_filter, &other.header_filter);
        self.body_filter = joined(&self.body_filter, &other.body_filter);
        self.log = joined(&self.log, &other.log);
    }

    /// Compiles `phases`; errors carry the field path below `lua` and LuaJIT's message.
    pub fn compile(phases: &pb::LuaPhases, scope: &str) -> Result<LuaHandlers, (String, String)> {
        let mut h = LuaHandlers::default();
        // Validation refuses these too; a config that skipped it still cannot run them here.
        let elsewhere = [
            (
                "init_worker",
                phases.init_worker.as_ref(),
                "the config's lua_init_worker",
            ),
            (
                "balancer",
                phases.balancer.as_ref(),
                "an upstream's lua_balancer",
            ),
        ];
        for (name, code, place) in elsewhere {
            if code.is_some_and(|c| c.source.is_some()) {
                return Err((
                    name.into(),
                    format!("the {name} phase is not per request: set it in {place}"),
                ));
            }
        }
        let slots = [
            ("rewrite", phases.rewrite.as_ref(), &mut h.rewrite),
            ("access", phases.access.as_ref(), &mut h.access),
            ("content", phases.content.as_ref(), &mut h.content),
            (
                "header_filter",
                phases.header_filter.as_ref(),
                &mut h.header_filter,
            ),
            (
                "body_filter",
                phases.body_filter.as_ref(),
                &mut h.body_filter,
            ),
            ("log", phases.log.as_ref(), &mut h.log),
        ];
        for (phase, code, slot) in slots {
            if let Some(chunk) = LuaChunk::compile(code, &format!("{scope}.{phase}"), phase)? {
                *slot = Arc::from([chunk]);
            }
        }
        Ok(h)
    }
}

impl LuaChunk {
    /// One handler from the config: `name` names it in errors, `field` is its path below the
    /// enclosing message. `None` when no code is set.
    pub fn compile(
        code: Option<&pb::LuaCode>,
        name: &str,
        field: &str,
    ) -> Result<Option<Arc<LuaChunk>>, (String, String)> {
        let Some(source) = code.and_then(|c| c.source.as_ref()) else {
            return Ok(None);
        };
        let (field, code) = match source {
            pb::lua_code::Source::Inline(code) => (format!("{field}.inline"), code.clone()),
            pb::lua_code::Source::Module(m) => (
                format!("{field}.module"),
                format!("return require({m:?})(...)"),
            ),
        };
        outpost_lua::check_syntax(name, &code).map_err(|e| (field, e.message))?;
        Ok(Some(Arc::new(LuaChunk {
            name: name.to_string(),
            code,
        })))
    }
}
