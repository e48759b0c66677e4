//! Settings chosen by name through an environment variable (the CPU Sinkhorn form, the CUDA
//! cost kernel and fused block, the WGSL fused kernel): parsing, the default when unset, and
//! the list of names that error messages and `optical info` show.

use crate::error::{Error, Result};

/// A setting chosen by name through an environment variable (the cost kernel, the fused
/// kernel's block): parsing, the default when unset, and the list of names for messages.
pub(crate) trait EnvChoice: Copy + Default + 'static {
    const VAR: &'static str;
    /// Every choice, the default first.
    const ALL: &'static [Self];
    fn name(self) -> &'static str;
}

/// A setting enum's names, read from `$var`: the inherent `ALL` (in the order listed, the
/// default first), `name` and `from_env`, and [`EnvChoice`] and `FromStr`.
#[allow(unused_macros)]
macro_rules! env_choice {
    ($t:ident, $var:expr, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $t {
            /// Every choice, the default first.
            pub const ALL: [$t; [$($name),+].len()] = [$($t::$variant),+];

            /// The name the environment variable and error messages use.
            pub fn name(self) -> &'static str {
                match self {
                    $($t::$variant => $name),+
                }
            }

            /// The choice the environment variable names (unset or empty: the default).
            pub fn from_env() -> $crate::error::Result<Self> {
                $crate::backend::choice::choice_from_env()
            }
        }

        impl $crate::backend::choice::EnvChoice for $t {
            const VAR: &'static str = $var;
            const ALL: &'static [Self] = &<$t>::ALL;
            fn name(self) -> &'static str {
                <$t>::name(self)
            }
        }

        impl std::str::FromStr for $t {
            type Err = $crate::error::Error;
            fn from_str(s: &str) -> $crate::error::Result<Self> {
                $crate::backend::choice::parse_choice(s)
            }
        }
    };
}

/// A setting's state, for `optical info`: its variable, its choices (the default first),
/// and the choice the environment makes now, or why the value there is not one.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Setting {
    /// The environment variable.
    pub variable: &'static str,
    /// Every choice, the default first.
    pub choices: Vec<&'static str>,
    /// The choice in effect: the variable's value, or the default when it is unset or
    /// empty; `None` when the value names no choice (every kernel call then fails).
    pub value: Option<&'static str>,
    /// The variable is set to a non-empty value (as opposed to the default applying).
    pub set: bool,
    /// Why the value is not a choice (the error the backend would return).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The state of the setting `T`.
pub(crate) fn setting<T: EnvChoice>() -> Setting {
    let set = std::env::var(T::VAR).is_ok_and(|v| !v.is_empty());
    let (value, error) = match choice_from_env::<T>() {
        Ok(t) => (Some(t.name()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Setting {
        variable: T::VAR,
        choices: T::ALL.iter().map(|t| t.name()).collect(),
        value,
        set,
        error,
    }
}

/// The choice named `s`, or an error that lists the names.
pub(crate) fn parse_choice<T: EnvChoice>(s: &str) -> Result<T> {
    T::ALL
        .iter()
        .copied()
        .find(|t| t.name() == s.trim())
        .ok_or_else(|| Error::parameter(T::VAR, choices::<T>(), s))
}

/// The choice that the environment variable names (unset or empty: the default).
pub(crate) fn choice_from_env<T: EnvChoice>() -> Result<T> {
    match std::env::var(T::VAR) {
        Ok(v) if !v.is_empty() => parse_choice(&v),
        _ => Ok(T::default()),
    }
}

/// "a, b or c": the names of every choice, the default first.
pub(crate) fn choices<T: EnvChoice>() -> String {
    let names: Vec<&str> = T::ALL.iter().map(|t| t.name()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    enum Flavour {
        #[default]
        Plain,
        Spicy,
        Sweet,
    }

    env_choice!(Flavour, "OPTICAL_TEST_FLAVOUR_UNSET", {
        Plain => "plain",
        Spicy => "spicy",
        Sweet => "sweet",
    });

    #[test]
    fn names_parse_and_errors_list_every_choice() {
        assert_eq!("spicy".parse::<Flavour>().unwrap(), Flavour::Spicy);
        assert_eq!(" sweet ".parse::<Flavour>().unwrap(), Flavour::Sweet);
        let err = "salty".parse::<Flavour>().unwrap_err().to_string();
        assert!(err.contains("OPTICAL_TEST_FLAVOUR_UNSET"), "{err}");
        assert!(err.contains("plain, spicy or sweet"), "{err}");
        assert!(err.contains("salty"), "{err}");
        // Unset: the default.
        assert_eq!(Flavour::from_env().unwrap(), Flavour::Plain);
        assert_eq!(choice_from_env::<Flavour>().unwrap(), Flavour::Plain);
        assert_eq!(
            Flavour::ALL,
            [Flavour::Plain, Flavour::Spicy, Flavour::Sweet]
        );
        assert_eq!(choices::<Flavour>(), "plain, spicy or sweet");
        let unset = setting::<Flavour>();
        assert_eq!(unset.variable, "OPTICAL_TEST_FLAVOUR_UNSET");
        assert_eq!(unset.choices, ["plain", "spicy", "sweet"]);
        assert_eq!((unset.value, unset.set), (Some("plain"), false));
        assert!(unset.error.is_none());
    }
}
