//! Label and field selectors of a list or watch, with field values from the kind's
//! strategy.

use h8s_machinery::{FieldSelector, LabelSelector};
use h8s_types::Resource;
use serde_json::Value;

use crate::ctx::Ctx;
use crate::error::{from_machinery, ApiError};
use crate::route::Target;
use crate::strategy::StrategyRef;

/// Label and field selectors of a list or watch.
pub(crate) struct Filter {
    pub label: LabelSelector,
    pub field: FieldSelector,
    pub res: &'static Resource,
    strategy: StrategyRef,
    /// (auth) The authorizer's narrowing of what the caller may see.
    authz: Option<std::sync::Arc<dyn crate::auth::ObjectFilter>>,
}

impl Filter {
    pub fn from_query(cx: &Ctx, t: &Target) -> Result<Filter, ApiError> {
        let res = t.res;
        let label = match cx.query.get("labelSelector") {
            Some(s) if !s.is_empty() => LabelSelector::parse(s).map_err(from_machinery)?,
            _ => LabelSelector::everything(),
        };
        let field = match cx.query.get("fieldSelector") {
            Some(s) if !s.is_empty() => FieldSelector::parse(s).map_err(from_machinery)?,
            _ => FieldSelector::everything(),
        };
        let fields = res.selectable_fields();
        field
            .check_supported(|f| fields.contains(&f))
            .map_err(|_| {
                let bad = field
                    .requirements()
                    .iter()
                    .find(|r| !fields.contains(&r.field.as_str()))
                    .map(|r| r.field.clone())
                    .unwrap_or_default();
                ApiError::bad_request(format!("field label not supported: {bad}"))
            })?;
        Ok(Filter {
            label,
            field,
            res,
            strategy: t.strategy(),
            authz: cx.authz_filter.clone(),
        })
    }

    pub fn matches(&self, o: &Value) -> bool {
        self.authz.as_ref().is_none_or(|f| f.allows(o))
            && self.label.matches_object(o)
            && (self.field.is_everything()
                || self
                    .field
                    .matches(|f| self.strategy.field_value(self.res, o, f).ok()))
    }

    pub fn is_everything(&self) -> bool {
        self.authz.is_none() && self.label.is_everything() && self.field.is_everything()
    }
}
