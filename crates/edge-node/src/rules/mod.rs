//! Page rules and what they are made of: request variables, templates, conditions, rate
//! limits. Compiled once per config; evaluated per request without I/O.

pub mod cache_rule;
pub mod condition;
pub mod lua_code;
pub mod page_rule;
pub mod rate_limit;
pub mod request_id;
pub mod request_view;
pub mod template;

pub use cache_rule::CacheRule;
pub use lua_code::{LuaChunk, LuaHandlers};
pub use page_rule::{HeaderOp, LocalResponse, PageRule, RuleEffects, evaluate};
pub use rate_limit::RateLimiter;
pub use request_id::RequestId;
pub use request_view::RequestView;
pub use template::Template;
