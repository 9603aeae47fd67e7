//! The CNI specification versions the plugin speaks, and what each allows:
//! CHECK from 0.4.0, GC and STATUS from 1.1.0; results carry a per-address
//! `version` field before 1.0.0.

use std::fmt;

use crate::error::CniError;

/// A supported `cniVersion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CniVersion {
    /// 0.3.0.
    V0_3_0,
    /// 0.3.1.
    V0_3_1,
    /// 0.4.0: adds CHECK and `prevResult`.
    V0_4_0,
    /// 1.0.0: drops the per-address `version` field.
    V1_0_0,
    /// 1.1.0: adds GC and STATUS.
    V1_1_0,
}

impl CniVersion {
    /// Every version, oldest first, as VERSION lists them.
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The newest.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// The version as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Reads `cniVersion`; an unsupported one is CNI error 1.
    pub fn parse(text: &str) -> Result<CniVersion, CniError> {
        CniVersion::ALL
            .into_iter()
            .find(|v| v.as_str() == text)
            .ok_or_else(|| {
                CniError::incompatible_version(format!(
                    "cniVersion {text:?} is not supported; supported: {}",
                    CniVersion::ALL.map(CniVersion::as_str).join(", ")
                ))
            })
    }

    /// Whether results list each address with `"version": "4"|"6"`
    /// (0.3.x and 0.4.0).
    pub fn tags_address_versions(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// Whether CHECK exists (0.4.0 and later).
    pub fn has_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// Whether GC and STATUS exist (1.1.0 and later).
    pub fn has_gc_and_status(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_parses_back_to_itself_and_others_are_error_1() {
        for version in CniVersion::ALL {
            assert_eq!(CniVersion::parse(version.as_str()).unwrap(), version);
        }
        for bad in ["0.2.0", "1.2.0", "", "1.0"] {
            let error = CniVersion::parse(bad).unwrap_err();
            assert_eq!(error.code, 1);
            assert!(error.details.contains(&format!("{bad:?}")), "{error:?}");
        }
    }

    #[test]
    fn features_follow_the_spec_versions() {
        use CniVersion::*;
        assert!(V0_4_0.tags_address_versions() && !V1_0_0.tags_address_versions());
        assert!(!V0_3_1.has_check() && V0_4_0.has_check());
        assert!(!V1_0_0.has_gc_and_status() && V1_1_0.has_gc_and_status());
    }
}
