//! How a secrets listing is ordered (`GET /v1/environments/{env}/secrets?sort=`).

use serde::{Deserialize, Serialize};

/// The order of a secret listing; ties on `updatedAt` are broken by name, so every order is
/// total and its cursor exact. A cursor belongs to the order (and search) it was issued for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SecretSort {
    /// By name, A to z (bytes): the default.
    #[default]
    #[serde(rename = "name")]
    Name,
    /// By name, z to A.
    #[serde(rename = "-name")]
    NameDesc,
    /// Least recently updated first.
    #[serde(rename = "updatedAt")]
    Updated,
    /// Most recently updated first.
    #[serde(rename = "-updatedAt")]
    UpdatedDesc,
}

impl SecretSort {
    /// The query-string value (`name`, `-name`, `updatedAt`, `-updatedAt`).
    pub fn as_str(self) -> &'static str {
        match self {
            SecretSort::Name => "name",
            SecretSort::NameDesc => "-name",
            SecretSort::Updated => "updatedAt",
            SecretSort::UpdatedDesc => "-updatedAt",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_value_is_the_serialized_form() {
        for s in [
            SecretSort::Name,
            SecretSort::NameDesc,
            SecretSort::Updated,
            SecretSort::UpdatedDesc,
        ] {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
            assert_eq!(
                serde_json::from_value::<SecretSort>(serde_json::json!(s.as_str())).unwrap(),
                s
            );
        }
    }
}
