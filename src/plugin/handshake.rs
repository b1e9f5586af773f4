//! The go-plugin handshake, as pure functions over the environment and the stdout line.
//!
//! Job: decide from the environment Nomad's go-plugin client hands us whether we may start and
//! where the socket goes, and produce (or, for tests, parse) the single handshake line
//! `CORE|APP|NETWORK|ADDR|PROTOCOL|SERVERCERT` that tells the client where to dial.
//!
//! Invariants:
//! - Nothing here writes to stdout or stderr; callers decide what to print and log.
//! - [`HandshakeLine`]'s `Display` always yields exactly six `|`-separated fields and no newline,
//!   and a line it yields parses back to an equal value ([`HandshakeLine::parse`]). An address
//!   that would break that (a `|`, a control character, empty) is refused by
//!   [`HandshakeLine::unix`].
//! - The app protocol version is always [`APP_PROTOCOL_VERSION`] (2, Nomad's gRPC plugins); a
//!   `PLUGIN_PROTOCOL_VERSIONS` that is set and does not offer it is an error, not a fallback.
//! - A socket path longer than [`SUN_PATH_MAX`] bytes is refused before any bind is attempted.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Name of the environment variable carrying Nomad's magic cookie.
pub const MAGIC_COOKIE_KEY: &str = "NOMAD_PLUGIN_MAGIC_COOKIE";
/// The value Nomad's `base.Handshake` sets (the same in Nomad 1.6.5 and 2.0.5).
pub const MAGIC_COOKIE_VALUE: &str =
    "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255";
/// go-plugin's core protocol version, the first field of the handshake line.
pub const CORE_PROTOCOL_VERSION: u32 = 1;
/// Nomad's app protocol version (0.9+ gRPC plugins), the second field of the handshake line.
pub const APP_PROTOCOL_VERSION: u32 = 2;
/// Environment variable listing the app protocol versions the client speaks (comma list).
pub const PROTOCOL_VERSIONS_KEY: &str = "PLUGIN_PROTOCOL_VERSIONS";
/// Environment variable naming the directory to create the socket in.
pub const SOCKET_DIR_KEY: &str = "PLUGIN_UNIX_SOCKET_DIR";
/// Environment variable naming the group (name or numeric gid) that should own the socket.
pub const SOCKET_GROUP_KEY: &str = "PLUGIN_UNIX_SOCKET_GROUP";
/// Environment variable go-plugin sets only with AutoMTLS, which Nomad never enables.
pub const CLIENT_CERT_KEY: &str = "PLUGIN_CLIENT_CERT";
/// Longest socket path `bind(2)` accepts on Linux: `sizeof(sun_path)` (108) less the NUL.
pub const SUN_PATH_MAX: usize = 107;

/// Why the environment does not let this process start as a plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The cookie variable is absent.
    #[error(
        "This binary is a plugin. These are not meant to be executed directly. Please execute the \
         program that consumes these plugins, which will load any plugins automatically \
         ({MAGIC_COOKIE_KEY} is not set)"
    )]
    MissingCookie,
    /// The cookie variable is set to something other than Nomad's value.
    #[error(
        "This binary is a plugin. These are not meant to be executed directly. Please execute the \
         program that consumes these plugins, which will load any plugins automatically \
         ({MAGIC_COOKIE_KEY} has the wrong value)"
    )]
    WrongCookie,
    /// `PLUGIN_PROTOCOL_VERSIONS` is set but does not offer version 2.
    #[error(
        "{PROTOCOL_VERSIONS_KEY}={offered:?} does not offer app protocol version \
         {APP_PROTOCOL_VERSION}, the only one this plugin speaks (Nomad 0.9+ gRPC plugins)"
    )]
    UnsupportedProtocolVersions {
        /// The variable's value as given.
        offered: String,
    },
    /// The socket path would not fit in `sockaddr_un.sun_path`.
    #[error(
        "socket path {path:?} is {len} bytes, over the {SUN_PATH_MAX}-byte unix socket path \
         limit; set {SOCKET_DIR_KEY} (or TMPDIR) to a shorter directory"
    )]
    SocketPathTooLong {
        /// The path that was refused.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// The socket path cannot be written into the handshake line unambiguously.
    #[error(
        "socket path {path:?} cannot appear in the handshake line: it must be UTF-8, non-empty, \
         and contain no '|' or control characters"
    )]
    UnprintableAddress {
        /// The path that was refused.
        path: PathBuf,
    },
}

/// What the environment asked of this plugin, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEnv {
    /// `PLUGIN_UNIX_SOCKET_DIR`, when set and non-empty.
    pub socket_dir: Option<PathBuf>,
    /// `PLUGIN_UNIX_SOCKET_GROUP`, when set and non-empty.
    pub socket_group: Option<String>,
    /// Whether `PLUGIN_CLIENT_CERT` was set non-empty (AutoMTLS asked for; not supported).
    pub client_cert_requested: bool,
}

impl PluginEnv {
    /// Reads and validates the process environment.
    ///
    /// # Errors
    /// See [`PluginEnv::from_lookup`].
    pub fn from_env() -> Result<Self, HandshakeError> {
        Self::from_lookup(|key| std::env::var_os(key))
    }

    /// Validates an environment given as a lookup function (so tests need not touch the real
    /// one). Empty values count as unset, as in go-plugin.
    ///
    /// # Errors
    /// A missing or wrong magic cookie, or a protocol list without version 2.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self, HandshakeError> {
        let non_empty = |key: &str| lookup(key).filter(|v| !v.is_empty());
        check_magic_cookie(lookup(MAGIC_COOKIE_KEY).as_deref().map(OsStrExt::as_bytes))?;
        if let Some(offered) = non_empty(PROTOCOL_VERSIONS_KEY) {
            check_protocol_versions(&offered.to_string_lossy())?;
        }
        Ok(Self {
            socket_dir: non_empty(SOCKET_DIR_KEY).map(PathBuf::from),
            socket_group: non_empty(SOCKET_GROUP_KEY).map(|g| g.to_string_lossy().into_owned()),
            client_cert_requested: non_empty(CLIENT_CERT_KEY).is_some(),
        })
    }
}

/// Checks the magic cookie's value (`None` = the variable is absent).
///
/// # Errors
/// [`HandshakeError::MissingCookie`] or [`HandshakeError::WrongCookie`].
pub fn check_magic_cookie(value: Option<&[u8]>) -> Result<(), HandshakeError> {
    match value {
        None => Err(HandshakeError::MissingCookie),
        Some(v) if v == MAGIC_COOKIE_VALUE.as_bytes() => Ok(()),
        Some(_) => Err(HandshakeError::WrongCookie),
    }
}

/// Parses a `PLUGIN_PROTOCOL_VERSIONS` comma list and returns the version to speak (always
/// [`APP_PROTOCOL_VERSION`]). Entries that are not integers are skipped, as go-plugin does.
///
/// # Errors
/// [`HandshakeError::UnsupportedProtocolVersions`] when no entry is 2.
pub fn check_protocol_versions(offered: &str) -> Result<u32, HandshakeError> {
    let offers_ours = offered
        .split(',')
        .filter_map(|v| v.trim().parse::<u32>().ok())
        .any(|v| v == APP_PROTOCOL_VERSION);
    if offers_ours {
        Ok(APP_PROTOCOL_VERSION)
    } else {
        Err(HandshakeError::UnsupportedProtocolVersions {
            offered: offered.to_owned(),
        })
    }
}

/// The directory the socket is created in.
#[derive(Debug)]
pub enum SocketDir {
    /// `PLUGIN_UNIX_SOCKET_DIR`: shared with others, so only our socket file is ever removed.
    Configured(PathBuf),
    /// A private 0700 directory under `$TMPDIR`, removed with everything in it on drop or
    /// [`SocketDir::close`].
    Private(tempfile::TempDir),
}

impl SocketDir {
    /// The directory's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            Self::Configured(p) => p,
            Self::Private(d) => d.path(),
        }
    }

    /// Removes the directory if it is ours (a configured one is left alone).
    ///
    /// # Errors
    /// Removing the private directory failed.
    pub fn close(self) -> io::Result<()> {
        match self {
            Self::Configured(_) => Ok(()),
            Self::Private(d) => d.close(),
        }
    }
}

/// Chooses the socket directory: the configured one if given, else a new private temp dir.
///
/// # Errors
/// Creating the private directory failed.
pub fn choose_socket_dir(configured: Option<&Path>) -> io::Result<SocketDir> {
    match configured {
        Some(dir) => Ok(SocketDir::Configured(dir.to_path_buf())),
        // tempfile creates directories with the umask's mode (often 0755); make it private.
        None => tempfile::Builder::new()
            .prefix("polydev-plugin-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map(SocketDir::Private),
    }
}

/// Checks that `path` fits in `sun_path`.
///
/// # Errors
/// [`HandshakeError::SocketPathTooLong`].
pub fn check_socket_path_len(path: &Path) -> Result<(), HandshakeError> {
    let len = path.as_os_str().len();
    if len > SUN_PATH_MAX {
        return Err(HandshakeError::SocketPathTooLong {
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(())
}

/// Network type in the handshake line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// A unix domain socket path.
    Unix,
    /// A TCP `host:port` (what go-plugin uses on Windows; accepted by the parser only).
    Tcp,
}

impl Network {
    fn as_str(self) -> &'static str {
        match self {
            Self::Unix => "unix",
            Self::Tcp => "tcp",
        }
    }
}

/// One go-plugin handshake line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeLine {
    /// Field 0: go-plugin core protocol version (must be 1).
    pub core_version: u32,
    /// Field 1: app protocol version.
    pub app_version: u32,
    /// Field 2.
    pub network: Network,
    /// Field 3: socket path or `host:port`.
    pub address: String,
    /// Field 4: `grpc` or `netrpc` (go-plugin assumes `netrpc` when the field is missing).
    pub protocol: String,
    /// Field 5: base64 server certificate for AutoMTLS; `None` when empty or absent.
    pub server_cert: Option<String>,
}

/// Why a handshake line could not be parsed (mirrors go-plugin's client checks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeLineError {
    /// Fewer than four `|`-separated fields.
    #[error("handshake line has {0} fields; at least 4 are needed")]
    TooFewFields(usize),
    /// More than six fields (go-plugin 1.4 would fold the extra into the certificate field).
    #[error("handshake line has {0} fields; at most 6 are allowed")]
    TooManyFields(usize),
    /// Field 0 or 1 is not an integer, or field 0 is not 1.
    #[error("handshake line has a bad version field {0:?}")]
    BadVersion(String),
    /// Field 2 is neither `unix` nor `tcp`.
    #[error("handshake line has an unknown network {0:?}")]
    BadNetwork(String),
    /// Field 3 is empty.
    #[error("handshake line has an empty address")]
    EmptyAddress,
}

impl HandshakeLine {
    /// The line this plugin prints: `1|2|unix|<path>|grpc|`.
    ///
    /// # Errors
    /// The path is not printable in the line ([`HandshakeError::UnprintableAddress`]).
    pub fn unix(socket_path: &Path) -> Result<Self, HandshakeError> {
        let unprintable = || HandshakeError::UnprintableAddress {
            path: socket_path.to_path_buf(),
        };
        let address = socket_path.to_str().ok_or_else(unprintable)?;
        if address.is_empty() || address.chars().any(|c| c == '|' || c.is_control()) {
            return Err(unprintable());
        }
        Ok(Self {
            core_version: CORE_PROTOCOL_VERSION,
            app_version: APP_PROTOCOL_VERSION,
            network: Network::Unix,
            address: address.to_owned(),
            protocol: "grpc".to_owned(),
            server_cert: None,
        })
    }

    /// Parses a line the way go-plugin's client does (trim, split on `|`).
    ///
    /// # Errors
    /// See [`HandshakeLineError`].
    pub fn parse(line: &str) -> Result<Self, HandshakeLineError> {
        let parts: Vec<&str> = line.trim().split('|').collect();
        if parts.len() < 4 {
            return Err(HandshakeLineError::TooFewFields(parts.len()));
        }
        if parts.len() > 6 {
            return Err(HandshakeLineError::TooManyFields(parts.len()));
        }
        let version = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| HandshakeLineError::BadVersion(s.to_owned()))
        };
        let core_version = version(parts[0])?;
        if core_version != CORE_PROTOCOL_VERSION {
            return Err(HandshakeLineError::BadVersion(parts[0].to_owned()));
        }
        let app_version = version(parts[1])?;
        let network = match parts[2] {
            "unix" => Network::Unix,
            "tcp" => Network::Tcp,
            other => return Err(HandshakeLineError::BadNetwork(other.to_owned())),
        };
        if parts[3].is_empty() {
            return Err(HandshakeLineError::EmptyAddress);
        }
        Ok(Self {
            core_version,
            app_version,
            network,
            address: parts[3].to_owned(),
            protocol: parts.get(4).unwrap_or(&"netrpc").to_string(),
            server_cert: parts
                .get(5)
                .filter(|c| !c.is_empty())
                .map(|c| (*c).to_owned()),
        })
    }
}

impl fmt::Display for HandshakeLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}|{}|{}|{}|{}|{}",
            self.core_version,
            self.app_version,
            self.network.as_str(),
            self.address,
            self.protocol,
            self.server_cert.as_deref().unwrap_or("")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn cookie_must_match_exactly() {
        assert_eq!(
            check_magic_cookie(Some(MAGIC_COOKIE_VALUE.as_bytes())),
            Ok(())
        );
        assert_eq!(check_magic_cookie(None), Err(HandshakeError::MissingCookie));
        assert_eq!(
            check_magic_cookie(Some(b"")),
            Err(HandshakeError::WrongCookie)
        );
        let mut upper = MAGIC_COOKIE_VALUE.to_uppercase();
        assert_eq!(
            check_magic_cookie(Some(upper.as_bytes())),
            Err(HandshakeError::WrongCookie)
        );
        upper = format!("{MAGIC_COOKIE_VALUE}\n");
        assert_eq!(
            check_magic_cookie(Some(upper.as_bytes())),
            Err(HandshakeError::WrongCookie)
        );
    }

    #[test]
    fn wrong_cookie_message_is_for_humans() {
        let msg = HandshakeError::WrongCookie.to_string();
        assert!(msg.contains("not meant to be executed directly"), "{msg}");
        assert!(msg.contains(MAGIC_COOKIE_KEY), "{msg}");
    }

    #[test]
    fn protocol_versions_must_offer_two() {
        assert_eq!(check_protocol_versions("2"), Ok(2));
        assert_eq!(check_protocol_versions("1,2,3"), Ok(2));
        assert_eq!(check_protocol_versions(" 3 , 2 "), Ok(2));
        assert_eq!(check_protocol_versions("x,2"), Ok(2));
        for bad in ["1", "1,3", "x", "", ",", "22", "-2"] {
            let err = check_protocol_versions(bad).unwrap_err();
            assert_eq!(
                err,
                HandshakeError::UnsupportedProtocolVersions {
                    offered: bad.to_owned()
                }
            );
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains(PROTOCOL_VERSIONS_KEY), "{msg}");
        }
    }

    #[test]
    fn env_is_validated_and_read() {
        let ok = PluginEnv::from_lookup(env(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            (PROTOCOL_VERSIONS_KEY, "2"),
            (SOCKET_DIR_KEY, "/run/x"),
            (SOCKET_GROUP_KEY, "nomad"),
            (CLIENT_CERT_KEY, "-----BEGIN CERTIFICATE-----"),
        ]))
        .unwrap();
        assert_eq!(
            ok,
            PluginEnv {
                socket_dir: Some(PathBuf::from("/run/x")),
                socket_group: Some("nomad".to_owned()),
                client_cert_requested: true,
            }
        );
        // Unset protocol list and empty optional values: accepted, treated as unset.
        let bare = PluginEnv::from_lookup(env(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            (SOCKET_DIR_KEY, ""),
            (PROTOCOL_VERSIONS_KEY, ""),
        ]))
        .unwrap();
        assert_eq!(bare.socket_dir, None);
        assert!(!bare.client_cert_requested);
        assert_eq!(
            PluginEnv::from_lookup(env(&[(PROTOCOL_VERSIONS_KEY, "2")])),
            Err(HandshakeError::MissingCookie)
        );
        assert!(matches!(
            PluginEnv::from_lookup(env(&[
                (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
                (PROTOCOL_VERSIONS_KEY, "1")
            ])),
            Err(HandshakeError::UnsupportedProtocolVersions { .. })
        ));
    }

    #[test]
    fn socket_dir_configured_or_private() {
        let configured = choose_socket_dir(Some(Path::new("/somewhere"))).unwrap();
        assert_eq!(configured.path(), Path::new("/somewhere"));
        configured.close().unwrap();

        let private = choose_socket_dir(None).unwrap();
        let path = private.path().to_path_buf();
        let mode = std::fs::metadata(&path).unwrap();
        assert!(mode.is_dir());
        assert_eq!(mode.permissions().mode() & 0o777, 0o700);
        private.close().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn sun_path_limit() {
        let fits = format!("/{}", "a".repeat(SUN_PATH_MAX - 1));
        assert_eq!(check_socket_path_len(Path::new(&fits)), Ok(()));
        let over = format!("/{}", "a".repeat(SUN_PATH_MAX));
        let err = check_socket_path_len(Path::new(&over)).unwrap_err();
        assert_eq!(
            err,
            HandshakeError::SocketPathTooLong {
                path: PathBuf::from(&over),
                len: SUN_PATH_MAX + 1
            }
        );
        assert!(err.to_string().contains("108 bytes"), "{err}");
    }

    #[test]
    fn unix_line_has_the_go_plugin_shape() {
        let line = HandshakeLine::unix(Path::new("/tmp/plugin123")).unwrap();
        assert_eq!(line.to_string(), "1|2|unix|/tmp/plugin123|grpc|");
        for bad in ["", "/tmp/a|b", "/tmp/a\nb"] {
            assert!(HandshakeLine::unix(Path::new(bad)).is_err(), "{bad:?}");
        }
        let non_utf8 = std::ffi::OsStr::from_bytes(b"/tmp/\xff");
        assert!(HandshakeLine::unix(Path::new(non_utf8)).is_err());
    }

    #[test]
    fn parse_follows_the_go_plugin_client() {
        let l = HandshakeLine::parse("1|2|tcp|127.0.0.1:10000|grpc\n").unwrap();
        assert_eq!(l.network, Network::Tcp);
        assert_eq!(l.address, "127.0.0.1:10000");
        assert_eq!(l.server_cert, None);
        assert_eq!(
            HandshakeLine::parse("1|2|unix|/p").unwrap().protocol,
            "netrpc"
        );
        assert_eq!(
            HandshakeLine::parse("1|2|unix"),
            Err(HandshakeLineError::TooFewFields(3))
        );
        assert_eq!(
            HandshakeLine::parse("1|2|unix|/p|grpc||mux"),
            Err(HandshakeLineError::TooManyFields(7))
        );
        assert_eq!(
            HandshakeLine::parse("2|2|unix|/p|grpc|"),
            Err(HandshakeLineError::BadVersion("2".into()))
        );
        assert_eq!(
            HandshakeLine::parse("1|x|unix|/p|grpc|"),
            Err(HandshakeLineError::BadVersion("x".into()))
        );
        assert_eq!(
            HandshakeLine::parse("1|2|udp|/p|grpc|"),
            Err(HandshakeLineError::BadNetwork("udp".into()))
        );
        assert_eq!(
            HandshakeLine::parse("1|2|unix||grpc|"),
            Err(HandshakeLineError::EmptyAddress)
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(
            path in "/[^|\\p{Cc}]{0,120}",
            app in 0u32..1000,
            cert in proptest::option::of("[A-Za-z0-9+/]{1,80}"),
        ) {
            let mut line = HandshakeLine::unix(Path::new(&path)).unwrap();
            line.app_version = app;
            line.server_cert = cert;
            let text = line.to_string();
            prop_assert_eq!(text.matches('|').count(), 5);
            prop_assert!(!text.contains('\n'));
            prop_assert_eq!(HandshakeLine::parse(&format!("{text}\n")), Ok(line));
        }

        #[test]
        fn any_accepted_address_round_trips(path in any::<String>()) {
            if let Ok(line) = HandshakeLine::unix(Path::new(&path)) {
                prop_assert_eq!(HandshakeLine::parse(&line.to_string()), Ok(line));
            }
        }
    }
}
