//! PolicyGate rule logic (pure): today the rule-combining expression and the compile-time checks
//! of each rule; evaluation against pull requests builds on these.

pub mod expression;
pub mod validate;

pub use expression::Expr;
pub use validate::validate_gate;
