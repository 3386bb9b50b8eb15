//! [`Config`]: what a server tells clients about its one export, and the limits
//! it enforces.

use crate::wire::{transmission_flags as tf, MAX_STRING};

/// A server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The export's name. A client asking for another name is refused
    /// (`NBD_REP_ERR_UNKNOWN`, or a closed connection after
    /// `NBD_OPT_EXPORT_NAME`); the empty name always means this export.
    pub name: String,
    /// Shown to a human by clients that ask (`NBD_INFO_DESCRIPTION`,
    /// `NBD_OPT_LIST`).
    pub description: String,
    /// The longest read, write, write-zeroes or cache request accepted, in
    /// bytes; advertised as the maximum block size. Also bounds the memory one
    /// connection holds for a request. Default 32 MiB; at most 2 GiB.
    pub max_request: u32,
    /// The preferred block size advertised (a power of two, at least 512 and at
    /// most `max_request`). Default 4096. The advertised minimum block size is
    /// always 1: any offset and length work.
    pub block_size: u32,
}

impl Config {
    /// The default `max_request`: 32 MiB, the largest request the protocol
    /// says every server should handle.
    pub const DEFAULT_MAX_REQUEST: u32 = 32 << 20;
    /// The largest `max_request` accepted (2 GiB): one connection may hold
    /// that much for a request, and a read reply's length field must fit it.
    pub const MAX_REQUEST_LIMIT: u32 = 1 << 31;

    /// Checks the settings against the protocol's rules; the error says which
    /// field is wrong and what it must be.
    pub fn validate(&self) -> Result<(), String> {
        for (field, s) in [("name", &self.name), ("description", &self.description)] {
            if s.len() > MAX_STRING {
                return Err(format!(
                    "the export {field} is {} bytes; NBD allows at most {MAX_STRING}",
                    s.len()
                ));
            }
            if s.contains('\0') {
                return Err(format!("the export {field} contains a NUL byte"));
            }
        }
        if !self.block_size.is_power_of_two() || self.block_size < 512 {
            return Err(format!(
                "the preferred block size {} must be a power of two of at least 512",
                self.block_size
            ));
        }
        if self.max_request > Self::MAX_REQUEST_LIMIT {
            return Err(format!(
                "max_request {} is above the {} this server allows",
                self.max_request,
                Self::MAX_REQUEST_LIMIT
            ));
        }
        if self.max_request < self.block_size {
            return Err(format!(
                "max_request {} is smaller than the preferred block size {}",
                self.max_request, self.block_size
            ));
        }
        Ok(())
    }

    /// The transmission flags advertised for an export.
    pub fn transmission_flags(read_only: bool) -> u16 {
        let mut f =
            tf::HAS_FLAGS | tf::SEND_FLUSH | tf::SEND_FUA | tf::SEND_TRIM | tf::SEND_WRITE_ZEROES;
        if read_only {
            f |= tf::READ_ONLY;
        }
        f
    }

    /// The longest write payload read and discarded after refusing the write;
    /// past it the server replies and closes. At least 32 MiB, because the
    /// protocol asks servers not to treat anything shorter as an attack.
    pub(crate) fn discard_limit(&self) -> u64 {
        (2 * u64::from(self.max_request)).max(32 << 20)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: String::new(),
            description: String::new(),
            max_request: Self::DEFAULT_MAX_REQUEST,
            block_size: 4096,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
        assert_eq!(Config::default().discard_limit(), 64 << 20);
    }

    #[test]
    fn bad_settings_name_the_field() {
        let bad = [
            (
                Config {
                    block_size: 1000,
                    ..Config::default()
                },
                "power of two",
            ),
            (
                Config {
                    block_size: 256,
                    ..Config::default()
                },
                "at least 512",
            ),
            (
                Config {
                    max_request: 2048,
                    ..Config::default()
                },
                "max_request",
            ),
            (
                Config {
                    max_request: u32::MAX,
                    ..Config::default()
                },
                "above",
            ),
            (
                Config {
                    name: "a\0b".into(),
                    ..Config::default()
                },
                "name contains a NUL",
            ),
            (
                Config {
                    description: "x".repeat(4097),
                    ..Config::default()
                },
                "description is 4097 bytes",
            ),
        ];
        for (cfg, want) in bad {
            let e = cfg.validate().unwrap_err();
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        }
        let small = Config {
            max_request: 4096,
            ..Config::default()
        };
        assert_eq!(small.discard_limit(), 32 << 20);
    }
}
