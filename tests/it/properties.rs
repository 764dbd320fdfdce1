//! Property tests of the parsers at Wharf's edges, on stable: the same entry points and
//! invariants as the fuzz targets (`wharf::fuzzing`, `fuzz/`), fed by proptest strategies
//! shaped like what strangers send.

use proptest::prelude::*;
use wharf::fuzzing;

fn cfg() -> ProptestConfig {
    ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn names(s in "[a-zA-Z0-9._/:@+-]{0,80}", raw in any::<Vec<u8>>()) {
        fuzzing::names(s.as_bytes());
        fuzzing::names(format!("sha256:{}", s).as_bytes());
        fuzzing::names(&raw);
    }

    #[test]
    fn mirror_urls(
        scheme in "(https?|ftp|HTTP|javascript)",
        host in "[a-zA-Z0-9.:@\\[\\]%_-]{0,30}",
        path in "(/[ -~\\x01\\x7f\\t\\n\u{e9}]{0,30})?",
        raw in "\\PC{0,60}",
    ) {
        fuzzing::mirror_url(format!("{scheme}://{host}{path}").as_bytes());
        fuzzing::mirror_url(raw.as_bytes());
    }

    #[test]
    fn netblocks(a in any::<[u8; 4]>(), p in 0u8..140, mapped in any::<bool>()) {
        let [a, b, c, d] = a;
        let s = if mapped { format!("::ffff:{a}.{b}.{c}.{d}/{p}") } else { format!("{a}.{b}.{c}.{d}/{p}") };
        fuzzing::mirror_url(s.as_bytes());
    }

    #[test]
    fn forwarding_headers(
        peer in prop::sample::select(vec!["127.0.0.1", "10.0.0.1", "::ffff:10.0.0.1", "203.0.113.5", "::1", "x"]),
        trusted in prop::sample::select(vec!["", "127.0.0.1/32", "10.0.0.0/8,127.0.0.1/32", "::/0", "0.0.0.0/0"]),
        entries in prop::collection::vec("(10\\.0\\.0\\.[0-9]|198\\.51\\.100\\.[0-9]|\\[::ffff:10\\.0\\.0\\.1\\]:80|unknown|[ -~]{0,12})", 0..6),
        forwarded in prop::collection::vec("(for|by|proto)=(\"?\\[?[0-9a-f.:]{0,20}\\]?\"?)(;[a-z]=[a-z])?", 0..4),
    ) {
        let input = format!("{peer}\n{trusted}\n{}\n{}", entries.join(", "), forwarded.join(", "));
        fuzzing::forwarded(input.as_bytes());
    }

    #[test]
    fn accept_headers(lines in prop::collection::vec("[ -~]{0,60}", 0..5), types in prop::collection::vec(prop::sample::select(vec![
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "*/*",
        "application/json;q=0.5",
    ]), 0..4)) {
        let mut all = lines;
        all.push(types.join(", "));
        fuzzing::accept(all.join("\n").as_bytes());
    }

    #[test]
    fn manifests(
        mt in prop::sample::select(vec!["application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json", "x", ""]),
        digest in "(sha256:[0-9a-f]{64}|sha256:[0-9A-Za-z]{0,70}|md5:[0-9a-f]{32}|)",
        size in any::<i64>(),
        schema in any::<i8>(),
        raw in any::<Vec<u8>>(),
    ) {
        let doc = format!(
            r#"{{"schemaVersion":{schema},"mediaType":"{mt}","config":{{"mediaType":"a","digest":"{digest}","size":{size}}},"layers":[{{"mediaType":"b","digest":"{digest}","size":{size}}}],"manifests":[{{"mediaType":"{mt}","digest":"{digest}","size":{size},"platform":{{"os":"linux","architecture":"{mt}"}}}}]}}"#
        );
        fuzzing::manifest(doc.as_bytes());
        fuzzing::manifest(&raw);
    }

    #[test]
    fn webhook_envelopes(repo in "\\PC{0,40}", action in "(push|pull|delete|)", raw in any::<Vec<u8>>()) {
        let doc = serde_json::json!({"events": [{"action": action, "target": {"repository": repo, "tag": "v1"}}]});
        fuzzing::webhook(doc.to_string().as_bytes());
        fuzzing::webhook(&raw);
    }

    #[test]
    fn mirror_forms(
        urls in "(https?://[a-z0-9.:-]{0,20}/[ -~\\x01]{0,10}[\\n ,]?){0,3}",
        bandwidth in "(-?[0-9]{0,12}|lots)",
        asns in "((AS)?[0-9]{0,11}[, ]?){0,4}",
        netblocks in "(([0-9]{1,3}\\.){3}[0-9]{1,3}/[0-9]{1,3}|::ffff:[0-9.]{7,15}/[0-9]{1,3}|[0-9a-f:]{2,20}/[0-9]{1,3})?",
        country in "[a-zA-Z]{0,3}",
        continent in "[A-Z]{0,3}",
        content in "(all|[a-z0-9,]{0,12}|AMD64)",
    ) {
        let body = serde_urlencoded::to_string([
            ("csrf", "x"), ("name", "m"), ("urls", &urls), ("bandwidth", &bandwidth),
            ("asns", &asns), ("netblocks", &netblocks), ("country", &country),
            ("continent", &continent), ("content", &content),
        ]).unwrap();
        fuzzing::mirror_form(body.as_bytes());
    }

    #[test]
    fn config_files(
        listen in "([0-9.:]{0,20}|127\\.0\\.0\\.1:[0-9]{1,6})",
        url in "(https?|oci|ftp):[ -~]{0,20}",
        duration in "[0-9]{0,4}(s|ms|min|h|x)?",
        cron in "[0-9*/ ,-]{0,20}",
        header in "[a-zA-Z-]{0,20}",
        n in any::<i64>(),
    ) {
        let toml = format!(
            "[server]\nlisten = \"{listen}\"\nclient_timeout = \"{duration}\"\nforwarded_header = \"{header}\"\n\
             trusted_proxies = [\"{listen}\"]\n[upstream]\nurl = \"{url}\"\ntags = \"{header}\"\n\
             [schedule]\nsync = \"{cron}\"\n[crawl]\nconcurrency = {n}\nmax_failures = {n}\n"
        );
        fuzzing::config(toml.as_bytes());
    }
}
