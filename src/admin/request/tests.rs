//! One test per documented answer of [`parse_request`], the limits at and past their
//! bounds, and the client's spelling read back (a property test).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[track_caller]
fn list(target: &str) -> ListQuery {
    match parse_request("GET", target, None, b"") {
        Ok(AdminRequest::List(q)) => q,
        other => panic!("GET {target}: {other:?}"),
    }
}

#[track_caller]
fn close(target: &str, content_type: Option<&str>, body: &str) -> CloseFilter {
    match parse_request("POST", target, content_type, body.as_bytes()) {
        Ok(AdminRequest::Close(f)) => f,
        other => panic!("POST {target} {body:?}: {other:?}"),
    }
}

/// The refusal of a request; checks its status and that its reason holds `says`.
#[track_caller]
fn refused(
    method: &str,
    target: &str,
    content_type: Option<&str>,
    body: &str,
    status: Status,
    says: &str,
) {
    let refusal =
        parse_request(method, target, content_type, body.as_bytes()).expect_err("a refusal");
    assert_eq!(refusal.status, status, "{method} {target}: {refusal:?}");
    assert!(
        refusal.reason.contains(says),
        "{method} {target}: {:?} lacks {says:?}",
        refusal.reason
    );
    assert!(!refusal.reason.contains('\n'));
}

#[track_caller]
fn bad_list(target: &str, says: &str) {
    refused("GET", target, None, "", Status::BadRequest, says);
}

#[track_caller]
fn bad_close(target: &str, body: &str, says: &str) {
    refused(
        "POST",
        target,
        Some(FORM_CONTENT_TYPE),
        body,
        Status::BadRequest,
        says,
    );
}

#[test]
fn a_plain_listing_takes_the_defaults() {
    assert_eq!(list("/connections"), ListQuery::default());
    assert_eq!(
        ListQuery::default(),
        ListQuery {
            sort: SortKey::Memory,
            limit: 100,
            source: None,
            reactor: None
        }
    );
    assert_eq!(list("/connections?"), ListQuery::default());
    assert!(matches!(
        parse_request("HEAD", "/connections", None, b""),
        Ok(AdminRequest::List(_))
    ));
}

#[test]
fn every_list_parameter_is_read() {
    assert_eq!(
        list("/connections?sort=idle&limit=10&source=127.0.0.5&reactor=1"),
        ListQuery {
            sort: SortKey::Idle,
            limit: 10,
            source: Some(cidr("127.0.0.5/32")),
            reactor: Some(1),
        }
    );
    assert_eq!(list("/connections?sort=age").sort, SortKey::Age);
    assert_eq!(list("/connections?sort=memory").sort, SortKey::Memory);
    assert_eq!(
        list("/connections?source=2001%3Adb8%3A%3A%2F32").source,
        Some(cidr("2001:db8::/32"))
    );
}

#[test]
fn an_unknown_path_is_404() {
    for target in [
        "/",
        "/connection",
        "/connections/",
        "/connections/closed",
        "/metrics",
    ] {
        refused("GET", target, None, "", Status::NotFound, "no such path");
    }
    // The path is matched without its query.
    refused(
        "GET",
        "/nothing?sort=memory",
        None,
        "",
        Status::NotFound,
        "\"/nothing\"",
    );
}

#[test]
fn a_get_of_the_close_is_405_allowing_post() {
    for method in ["GET", "HEAD", "PUT", "DELETE"] {
        refused(
            method,
            "/connections/close?id=1",
            None,
            "",
            Status::MethodNotAllowed { allow: "POST" },
            "takes POST",
        );
    }
}

#[test]
fn a_post_to_the_listing_is_405_allowing_get_and_head() {
    for method in ["POST", "PUT", "DELETE", "get"] {
        refused(
            method,
            "/connections",
            None,
            "",
            Status::MethodNotAllowed { allow: "GET, HEAD" },
            "takes GET, HEAD",
        );
    }
}

#[test]
fn a_limit_of_0_or_past_the_cap_is_400_and_the_cap_itself_is_taken() {
    assert_eq!(list("/connections?limit=1").limit, 1);
    assert_eq!(list("/connections?limit=1000").limit, MAX_LIMIT);
    bad_list("/connections?limit=0", "limit: \"0\" is not 1 to 1000");
    bad_list(
        "/connections?limit=1001",
        "limit: \"1001\" is not 1 to 1000",
    );
    bad_list("/connections?limit=-1", "limit:");
    bad_list("/connections?limit=ten", "limit:");
    bad_list("/connections?limit=", "limit:");
    bad_list("/connections?limit=99999999999999999999999", "limit:");
}

#[test]
fn an_unknown_sort_is_400() {
    bad_list(
        "/connections?sort=size",
        "sort: `size` is not memory, age or idle",
    );
    bad_list("/connections?sort=Memory", "sort:");
}

#[test]
fn a_bad_source_is_400() {
    bad_list("/connections?source=10.0.0.0/33", "source:");
    bad_list("/connections?source=example.com", "source:");
    bad_list("/connections?source=", "source:");
}

#[test]
fn a_bad_reactor_is_400() {
    bad_list(
        "/connections?reactor=-1",
        "reactor: \"-1\" is not a reactor's index",
    );
    bad_list("/connections?reactor=+1", "reactor:");
    bad_list("/connections?reactor= 1", "reactor:");
    bad_list(
        "/connections?reactor=99999999999999999999999",
        "larger than any",
    );
}

#[test]
fn a_reactor_the_server_lacks_is_400_and_only_it_is_asked() {
    let q = list("/connections?reactor=1");
    assert_eq!(q.check_reactors(2), Ok(()));
    let refusal = q.check_reactors(1).expect_err("one reactor: 0 only");
    assert_eq!(refusal.status, Status::BadRequest);
    assert!(refusal.reason.contains("0 to 0"), "{refusal:?}");
    assert!(q.asks(1) && !q.asks(0) && !q.asks(2));
    let all = ListQuery::default();
    assert_eq!(all.check_reactors(1), Ok(()));
    assert!(all.asks(0) && all.asks(7));
}

#[test]
fn a_listing_with_a_body_is_400() {
    refused(
        "GET",
        "/connections",
        Some(FORM_CONTENT_TYPE),
        "sort=age",
        Status::BadRequest,
        "takes no body",
    );
}

#[test]
fn an_unknown_parameter_is_400_naming_it() {
    bad_list(
        "/connections?sort=age&order=asc",
        "unknown parameter \"order\"",
    );
    // A close's filter is no listing's parameter, and the reverse.
    bad_list(
        "/connections?min_memory=1K",
        "unknown parameter \"min_memory\"",
    );
    bad_close(
        "/connections/close?sort=memory&id=1",
        "",
        "unknown parameter \"sort\"",
    );
    // The misspelling that must not widen a close.
    bad_close(
        "/connections/close",
        "source=127.0.0.5&min_mem=1M",
        "unknown parameter \"min_mem\"; this path takes id, source, min_memory",
    );
}

#[test]
fn a_parameter_given_twice_is_400() {
    bad_list("/connections?limit=5&limit=6", "limit is given twice");
    bad_close("/connections/close?id=1&id=1", "", "id is given twice");
    // Once in the query string, once in the body.
    bad_close(
        "/connections/close?source=10.0.0.1",
        "source=10.0.0.2",
        "source is given twice",
    );
}

#[test]
fn a_bad_percent_escape_is_400() {
    bad_list("/connections?source=10.0.0.0%2", "the query string:");
    bad_close("/connections/close", "source=%GG", "the body:");
}

#[test]
fn a_close_without_a_filter_is_400() {
    for (target, body) in [
        ("/connections/close", ""),
        ("/connections/close?", "&"),
        ("/connections/close?dry_run", ""),
        ("/connections/close", "dry_run=1"),
    ] {
        bad_close(target, body, "a close needs a filter");
    }
}

#[test]
fn every_close_filter_is_read_from_the_query_string() {
    assert_eq!(
        close(
            "/connections/close?id=7&source=127.0.0.0%2F8&min_memory=64K&idle_over=30s&age_over=1.5h&dry_run",
            None,
            ""
        ),
        CloseFilter {
            id: Some(7),
            source: Some(cidr("127.0.0.0/8")),
            min_memory: Some(64 * 1024),
            idle_over: Some(Duration::from_secs(30)),
            age_over: Some(Duration::from_secs(5400)),
            dry_run: true,
        }
    );
}

#[test]
fn a_close_filter_is_read_from_a_form_body_and_the_query_string_together() {
    let want = CloseFilter {
        source: Some(cidr("127.0.0.5")),
        min_memory: Some(1),
        dry_run: true,
        ..CloseFilter::default()
    };
    assert_eq!(
        close(
            "/connections/close?dry_run=true",
            Some(FORM_CONTENT_TYPE),
            "source=127.0.0.5&min_memory=1"
        ),
        want
    );
    // The media type is matched without its parameters and in any letter case.
    assert_eq!(
        close(
            "/connections/close",
            Some("Application/X-WWW-Form-Urlencoded ; charset=utf-8"),
            "source=127.0.0.5&min_memory=1B&dry_run="
        ),
        want
    );
    // An empty body needs no type.
    assert_eq!(
        close("/connections/close?id=3", Some("text/plain"), "").id,
        Some(3)
    );
}

#[test]
fn dry_run_takes_the_documented_spellings_only() {
    let dry = |v: &str| close(&format!("/connections/close?id=1&dry_run{v}"), None, "").dry_run;
    assert!(dry(""));
    assert!(dry("="));
    assert!(dry("=1"));
    assert!(dry("=true"));
    assert!(!dry("=0"));
    assert!(!dry("=false"));
    assert!(!close("/connections/close?id=1", None, "").dry_run);
    bad_close(
        "/connections/close?id=1&dry_run=yes",
        "",
        "dry_run: \"yes\" is not 1, true",
    );
}

#[test]
fn bad_filter_values_are_400_naming_the_filter() {
    bad_close(
        "/connections/close?id=x",
        "",
        "id: \"x\" is not a connection's id",
    );
    bad_close("/connections/close?id=-3", "", "id:");
    bad_close("/connections/close?min_memory=1T", "", "min_memory:");
    bad_close("/connections/close?min_memory=-1", "", "min_memory:");
    bad_close("/connections/close?idle_over=30", "", "idle_over:");
    bad_close("/connections/close?age_over=9000h", "", "age_over:");
    bad_close("/connections/close?source=1.2.3", "", "source:");
}

#[test]
fn a_close_body_of_another_type_is_415() {
    for content_type in [None, Some("application/json"), Some("text/plain"), Some("")] {
        refused(
            "POST",
            "/connections/close",
            content_type,
            "id=1",
            Status::UnsupportedMediaType,
            "must be application/x-www-form-urlencoded",
        );
    }
}

#[test]
fn a_close_body_over_the_limit_is_413_and_at_the_limit_is_read() {
    let at_limit = format!("id=1{}", "&".repeat(MAX_BODY - 4));
    assert_eq!(at_limit.len(), MAX_BODY);
    assert_eq!(
        close("/connections/close", Some(FORM_CONTENT_TYPE), &at_limit).id,
        Some(1)
    );
    let over = format!("{at_limit}&");
    refused(
        "POST",
        "/connections/close",
        Some(FORM_CONTENT_TYPE),
        &over,
        Status::PayloadTooLarge,
        "over 1024 bytes",
    );
}

fn any_cidr() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        (any::<u32>(), 0..=32u8)
            .prop_map(|(a, p)| Cidr::new(IpAddr::V4(Ipv4Addr::from(a)), p).expect("v4")),
        (any::<u128>(), 0..=128u8)
            .prop_map(|(a, p)| Cidr::new(IpAddr::V6(Ipv6Addr::from(a)), p).expect("v6")),
    ]
}

fn any_duration() -> impl Strategy<Value = Duration> {
    // Whole milliseconds up to the longest duration a flag takes: DurationArg prints them
    // exactly.
    (0..=crate::addr::MAX_DURATION.as_millis() as u64).prop_map(Duration::from_millis)
}

/// A close's durations rounded to the microsecond: the duration parser computes in
/// floating point, so `8819537560ms` reads back as 8819537.560000001 s.
fn to_the_microsecond(request: AdminRequest) -> AdminRequest {
    let round = |d: Option<Duration>| {
        d.map(|d| Duration::from_micros(((d.as_nanos() + 500) / 1000) as u64))
    };
    match request {
        AdminRequest::Close(f) => AdminRequest::Close(CloseFilter {
            idle_over: round(f.idle_over),
            age_over: round(f.age_over),
            ..f
        }),
        list => list,
    }
}

proptest! {
    #[test]
    fn a_list_query_reads_back_as_written(
        sort in prop::sample::select(SortKey::ALL.to_vec()),
        limit in 1..=MAX_LIMIT,
        source in prop::option::of(any_cidr()),
        reactor in prop::option::of(any::<usize>()),
    ) {
        let q = ListQuery { sort, limit, source, reactor };
        prop_assert_eq!(list(&format!("/connections?{}", q.to_query())), q);
    }

    #[test]
    fn a_close_filter_reads_back_as_written_in_the_query_or_the_body(
        id in prop::option::of(any::<u64>()),
        source in prop::option::of(any_cidr()),
        min_memory in prop::option::of(0..=u64::MAX / 2),
        idle_over in prop::option::of(any_duration()),
        age_over in prop::option::of(any_duration()),
        dry_run in any::<bool>(),
    ) {
        let f = CloseFilter { id, source, min_memory, idle_over, age_over, dry_run };
        let form = f.to_form();
        let from_query = parse_request("POST", &format!("/connections/close?{form}"), None, b"")
            .map(to_the_microsecond);
        let from_body =
            parse_request("POST", "/connections/close", Some(FORM_CONTENT_TYPE), form.as_bytes())
                .map(to_the_microsecond);
        if f.has_filter() {
            prop_assert_eq!(from_query, Ok(AdminRequest::Close(f)));
            prop_assert_eq!(from_body, Ok(AdminRequest::Close(f)));
        } else {
            prop_assert_eq!(from_query.map_err(|r| r.status), Err(Status::BadRequest));
            prop_assert_eq!(from_body.map_err(|r| r.status), Err(Status::BadRequest));
        }
    }
}
