//! The shipped config documents the defaults: it must parse and match them.

use lmpi::config::Config;

#[test]
fn shipped_config_parses_to_the_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lmpi.toml");
    let cfg = Config::load(&path).expect("config/lmpi.toml must parse");
    let def = Config::default();
    assert_eq!(cfg.threads_per_rank, def.threads_per_rank);
    assert_eq!(cfg.report_interval, def.report_interval);
    assert_eq!(cfg.batch_size, def.batch_size);
    assert_eq!(cfg.chunk_threshold, def.chunk_threshold);
    assert_eq!(cfg.chunk_size, def.chunk_size);
    assert_eq!(cfg.copy_project_ids, def.copy_project_ids);
    assert_eq!(cfg.oldest_date, 0);
    assert_eq!(cfg.newest_date, 0);
    assert_eq!(cfg.lustre.mode, def.lustre.mode);
    assert_eq!(cfg.lustre.mdts, def.lustre.mdts);
    assert_eq!(cfg.lustre.wide_striping_rule, def.lustre.wide_striping_rule);
    assert_eq!(cfg.stats.enabled, def.stats.enabled);
    assert_eq!(cfg.control.enabled, def.control.enabled);
    assert_eq!(cfg.max_threads_per_rank, def.max_threads_per_rank);
    assert!((64..=1024).contains(&def.max_threads_per_rank));
}

#[test]
fn numbers_are_range_checked() {
    for (text, key) in [
        ("report_interval = 86401", "report_interval"),
        ("oldest_date = 3155760001", "oldest_date"),
        ("newest_date = -1", "newest_date"),
        ("batch_size = 1000001", "batch_size"),
        ("chunk_size = 2147483648", "chunk_size"),
        (
            "chunk_size = 8192\nchunk_threshold = 4096",
            "chunk_threshold",
        ),
        ("chunk_threshold = 2251799813685248", "chunk_threshold"),
        ("max_threads_per_rank = 0", "max_threads_per_rank"),
        ("max_threads_per_rank = 1025", "max_threads_per_rank"),
        (
            "max_threads_per_rank = 8\nthreads_per_rank = 9",
            "threads_per_rank",
        ),
        ("[control]\ntimeout_ms = 600001", "timeout_ms"),
    ] {
        let err = Config::parse(text, "/etc/x.toml")
            .expect_err(text)
            .to_string();
        assert!(err.contains(key) && !err.contains('\n'), "{text}: {err}");
    }
    for ok in [
        "report_interval = 86400\noldest_date = 3155760000\nbatch_size = 1000000",
        "chunk_size = 1073741824\nchunk_threshold = 1125899906842624",
        "max_threads_per_rank = 1024\nthreads_per_rank = 1024",
        "max_threads_per_rank = 1\nthreads_per_rank = 1",
    ] {
        Config::parse(ok, "x.toml").unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn errors_name_key_and_file() {
    for (text, key) in [
        ("nope = 1", "nope"),
        ("threads_per_rank = -3", "threads_per_rank"),
        ("threads_per_rank = \"many\"", "threads_per_rank"),
        ("chunk_size = 1000", "chunk_size"),
        ("report_interval = 0", "report_interval"),
        ("[stats]\nbogus = true", "bogus"),
    ] {
        let err = Config::parse(text, "/etc/x.toml")
            .expect_err(text)
            .to_string();
        assert!(
            err.contains(key) && err.contains("/etc/x.toml"),
            "{text}: {err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");
    }
    // Syntax and type errors say where, once.
    let err = Config::parse("a_comment = 1\n", "/etc/x.toml")
        .expect_err("unknown key")
        .to_string();
    assert!(
        err.starts_with("/etc/x.toml: line 1: unknown field `a_comment`"),
        "{err}"
    );
    let err = Config::parse("# ok\nthreads_per_rank = \"many\"\n", "/etc/x.toml")
        .expect_err("type")
        .to_string();
    assert_eq!(
        err,
        "/etc/x.toml: line 2: invalid type: string \"many\", expected usize: `threads_per_rank = \"many\"`"
    );
}

mod fuzz {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn parser_never_panics(s in "\\PC{0,200}") {
            let _ = lmpi::config::Config::parse(&s, "fuzz.toml");
        }

        #[test]
        fn keyish_input_never_panics(k in "(threads_per_rank|batch_size|chunk_size|exclude|oldest_date)", v in "[-0-9a-z\\[\\]\" ,.]{0,20}") {
            let _ = lmpi::config::Config::parse(&format!("{k} = {v}"), "fuzz.toml");
        }
    }
}
