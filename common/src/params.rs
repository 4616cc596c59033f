//! Hyperparameter values and their conversion to and from the wire.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::proto;

/// One hyperparameter value, as written in a spec (`64`, `1e-3`, `"relu"`, `true`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A boolean flag.
    Bool(bool),
    /// An integer (widths, depths, batch sizes, epochs).
    Int(i64),
    /// A real number (learning rates, dropout).
    Float(f64),
    /// A name (activations, optimizers).
    Str(String),
}

/// A full assignment of hyperparameters for one trial, ordered by name.
pub type Params = BTreeMap<String, ParamValue>;

impl ParamValue {
    /// The value as a real number, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Float(v) => Some(*v),
            ParamValue::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// The value as an integer, if it is an integer (or a float with no fraction).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ParamValue::Int(v) => Some(*v),
            ParamValue::Float(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Some(*v as i64),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ParamValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            ParamValue::Bool(_) => "a boolean",
            ParamValue::Int(_) => "an integer",
            ParamValue::Float(_) => "a number",
            ParamValue::Str(_) => "a string",
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(v) => write!(f, "{v}"),
            ParamValue::Int(v) => write!(f, "{v}"),
            // `{}` on f64 prints the shortest representation that round-trips.
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Str(v) => f.write_str(v),
        }
    }
}

impl From<&ParamValue> for proto::ParamValue {
    fn from(v: &ParamValue) -> Self {
        use proto::param_value::Kind;
        let kind = match v {
            ParamValue::Bool(b) => Kind::Bool(*b),
            ParamValue::Int(i) => Kind::Int(*i),
            ParamValue::Float(x) => Kind::Float(*x),
            ParamValue::Str(s) => Kind::Str(s.clone()),
        };
        proto::ParamValue { kind: Some(kind) }
    }
}

impl TryFrom<&proto::ParamValue> for ParamValue {
    type Error = String;

    fn try_from(v: &proto::ParamValue) -> Result<Self, Self::Error> {
        use proto::param_value::Kind;
        match &v.kind {
            Some(Kind::Bool(b)) => Ok(ParamValue::Bool(*b)),
            Some(Kind::Int(i)) => Ok(ParamValue::Int(*i)),
            Some(Kind::Float(x)) => Ok(ParamValue::Float(*x)),
            Some(Kind::Str(s)) => Ok(ParamValue::Str(s.clone())),
            None => Err("parameter value has no kind set".into()),
        }
    }
}

/// Converts a parameter map to its wire form.
pub fn params_to_proto(p: &Params) -> std::collections::HashMap<String, proto::ParamValue> {
    p.iter().map(|(k, v)| (k.clone(), v.into())).collect()
}

/// Converts a parameter map from its wire form, naming the first bad entry.
pub fn params_from_proto(
    p: &std::collections::HashMap<String, proto::ParamValue>,
) -> Result<Params, String> {
    p.iter()
        .map(|(k, v)| {
            ParamValue::try_from(v)
                .map(|v| (k.clone(), v))
                .map_err(|e| format!("{k}: {e}"))
        })
        .collect()
}
