//! Which servers a client tries: `-s`, else `$GALE_SERVER`, else
//! `localhost:11512`. The address syntax itself is `gale_net::addr`.

pub use gale_net::addr::{
    display_list, parse_server_list, ServerAddr, ServerAddrError, DEFAULT_PORT,
};

/// Environment variable naming the server list when `-s` is not given.
pub const SERVER_ENV: &str = "GALE_SERVER";
/// Server used when neither `-s` nor `GALE_SERVER` says otherwise.
pub const DEFAULT_SERVER: &str = "localhost:11512";

/// The server list from `-s` if given, else `$GALE_SERVER`, else `localhost:11512`.
pub fn servers_from(
    option: Option<&str>,
    env: Option<&str>,
) -> Result<Vec<ServerAddr>, ServerAddrError> {
    parse_server_list(option.or(env).unwrap_or(DEFAULT_SERVER))
}

/// [`servers_from`] with the process environment.
pub fn servers_from_env(option: Option<&str>) -> Result<Vec<ServerAddr>, ServerAddrError> {
    let env = std::env::var(SERVER_ENV).ok();
    servers_from(option, env.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_beats_env_beats_default() {
        let list = |s: &str| parse_server_list(s).unwrap();
        assert_eq!(servers_from(Some("o"), Some("e")).unwrap(), list("o:11512"));
        assert_eq!(servers_from(None, Some("e:1")).unwrap(), list("e:1"));
        assert_eq!(servers_from(None, None).unwrap(), list("localhost:11512"));
    }
}
