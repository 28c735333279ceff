//! A push target's or a pull source's URL (`rtmp://HOST[:PORT]/APP/KEY` or `rtmps://…`) as
//! the API and the config check it and show it: the split and the redaction are the RTMP
//! client's ([`corecast_common::client::url`]), so what the API accepts is exactly what the
//! restream engine can connect to, and what it shows is what the engine's listing shows.
//!
//! A platform's URL is its ingest server, an application and the account's stream key
//! (YouTube `rtmps://a.rtmps.youtube.com/live2/KEY`, Twitch `rtmp://INGEST/app/KEY`,
//! Facebook `rtmps://live-api-s.facebook.com:443/rtmp/KEY`). The key is a secret: an answer
//! or a log shows [`redact`]'s form, `SCHEME://HOST:PORT/APP/…`, and a refusal's message never
//! quotes the key. Sans-IO: strings in, a parsed URL or a refusal out.

pub use corecast_common::client::url::TargetUrl;

/// Longest URL accepted (platform URLs are well under it).
pub const MAX_URL_CHARS: usize = 2048;

/// Checks `text` as a target URL; the refusal is a message for people, prefixed `url: `.
pub fn parse(text: &str) -> Result<TargetUrl, String> {
    if text.chars().count() > MAX_URL_CHARS {
        return Err(format!("url: longer than {MAX_URL_CHARS} characters"));
    }
    TargetUrl::parse(text.trim()).map_err(|e| format!("url: {e}"))
}

/// `text` without its stream key: `SCHEME://HOST:PORT/APP/…` when it parses, else everything
/// up to its last `/` followed by `…`.
pub fn redact(text: &str) -> String {
    match TargetUrl::parse(text.trim()) {
        Ok(url) => url.redacted(),
        Err(_) => corecast_common::client::url::redact(text.trim()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn platform_urls_parse_and_redact() {
        let yt = parse("rtmps://a.rtmps.youtube.com/live2/abcd-efgh-ijkl").expect("youtube");
        assert_eq!((yt.host.as_str(), yt.port), ("a.rtmps.youtube.com", 443));
        assert_eq!(
            redact("rtmps://a.rtmps.youtube.com/live2/abcd-efgh"),
            "rtmps://a.rtmps.youtube.com:443/live2/…"
        );
        assert_eq!(
            redact("rtmps://live-api-s.facebook.com:443/rtmp/FB-1?s=2"),
            "rtmps://live-api-s.facebook.com:443/rtmp/…"
        );
        assert_eq!(redact("not a url secret"), "/…");
    }

    #[test]
    fn bad_urls_are_refused_without_the_key() {
        for (text, says) in [
            ("http://h/app/SECRET", "scheme"),
            ("rtmp://h/SECRET", "/app/key"),
            ("rtmp://u:SECRET@h/app/k", "host"),
            ("SECRET", "not a URL"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.starts_with("url: ") && e.contains(says), "{text}: {e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
        let long = format!("rtmp://h/app/{}", "k".repeat(MAX_URL_CHARS));
        assert!(parse(&long).expect_err("long").contains("longer"));
    }

    proptest! {
        /// Whatever the key, a parsed URL's redaction holds none of it; and any text is
        /// parsed or refused without a panic.
        #[test]
        fn a_key_never_survives_redaction(key in "[A-Za-z0-9_-]{8,40}(\\?[a-z=&0-9]{1,20})?",
                                          tls in any::<bool>(), port in proptest::option::of(1u16..)) {
            let scheme = if tls { "rtmps" } else { "rtmp" };
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let text = format!("{scheme}://ingest.example.com{port}/app/{key}");
            let parsed = parse(&text).expect("valid");
            prop_assert_eq!(&parsed.stream, &key);
            let shown = redact(&text);
            prop_assert!(!shown.contains(&key), "{}", shown);
            prop_assert!(shown.ends_with("/app/…"));
        }

        #[test]
        fn any_text_is_parsed_or_refused(text in ".{0,80}") {
            let _ = parse(&text);
            let _ = redact(&text);
        }
    }
}
