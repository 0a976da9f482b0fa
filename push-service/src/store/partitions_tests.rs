//! Unit tests of `partitions`: names, plans, and the relation a row's statement names.

use super::*;

const DEC_1: i64 = 1_796_083_200_000; // 2026-12-01T00:00:00Z

#[test]
fn names_are_read_back_and_strangers_ignored() {
    let cases = [
        ("deliveries_d20261201", Some(Span::Day(DEC_1))),
        (
            "deliveries_before_20261202",
            Some(Span::Before(DEC_1 + DAY_MS)),
        ),
        ("deliveries_default", Some(Span::Default)),
        ("deliveries_d2026120", None),
        ("deliveries_d20261301", None),
        ("deliveries_x20261201", None),
        ("notifications_d20261201", None),
        ("deliveries_d2026120a", None),
    ];
    for (name, span) in cases {
        assert_eq!(span_of("deliveries", name), span, "{name}");
    }
    assert_eq!(day_name(DEC_1), "20261201");
    assert_eq!(day_name(DEC_1 + DAY_MS - 1), "20261201");
    assert_eq!(day_name(DEC_1 + DAY_MS), "20261202");
}

#[test]
fn plans_make_the_week_ahead_and_drop_what_ended_before_the_cutoff() {
    // Today (December 1st) and the seven days after it.
    let week: Vec<String> = (1..=8).map(|d| format!("t_d202612{d:02}")).collect();
    let with = |extra: &[&str], days: &[String]| {
        let mut all: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        all.extend(days.iter().cloned());
        all
    };
    let noon = DEC_1 + DAY_MS / 2;
    let cutoff = Some(DEC_1 - 30 * DAY_MS); // November 1st
                                            // (existing, drop before, days made, dropped)
    type Case = (Vec<String>, Option<i64>, Vec<String>, Vec<&'static str>);
    let cases: [Case; 5] = [
        // Right after the migration: the copy covers today.
        (
            with(&["t_before_20261202", "t_default"], &[]),
            None,
            week[1..].to_vec(),
            vec![],
        ),
        // All there: nothing to do.
        (with(&["t_default"], &week), cutoff, vec![], vec![]),
        // Old days go when their end is at or before the cutoff, the copy too.
        (
            with(
                &[
                    "t_before_20261020",
                    "t_d20261020",
                    "t_d20261031",
                    "t_d20261101",
                    "t_default",
                ],
                &week,
            ),
            cutoff,
            vec![],
            vec!["t_before_20261020", "t_d20261020", "t_d20261031"],
        ),
        // Retention off: nothing dropped, however old.
        (
            with(&["t_d20200101", "t_default"], &[]),
            None,
            week.clone(),
            vec![],
        ),
        // Another table's names and strangers are left alone.
        (
            with(&["u_d20200101", "t_archive", "t_default"], &[]),
            Some(DEC_1),
            week.clone(),
            vec![],
        ),
    ];
    for (i, (existing, before, made, dropped)) in cases.into_iter().enumerate() {
        let plan = plan("t", &existing, noon, before);
        let got: Vec<&String> = plan.create.iter().map(|(n, ..)| n).collect();
        assert_eq!(got, made.iter().collect::<Vec<_>>(), "case {i}: made");
        assert_eq!(plan.drop, dropped, "case {i}: dropped");
        for (name, from, to) in &plan.create {
            assert_eq!(span_of("t", name), Some(Span::Day(*from)), "case {i}");
            assert_eq!(to - from, DAY_MS, "case {i}");
        }
    }
}

#[test]
fn statements_name_a_known_day_and_the_table_otherwise() {
    let days = Days::default();
    let dec_1 = crate::ids::new_timed_id("ntf", DEC_1 + 5);
    let dec_2 = crate::ids::new_timed_id("ntf", DEC_1 + DAY_MS);
    let nov_1 = crate::ids::new_timed_id("ntf", DEC_1 - 30 * DAY_MS);
    let legacy = crate::ids::new_id("ntf");
    assert_eq!(
        days.relation("deliveries", &dec_1),
        "deliveries",
        "nothing known yet"
    );
    days.set(
        [
            "deliveries_d20261201",
            "deliveries_d20261202",
            "deliveries_default",
            "notifications_before_20261101",
        ]
        .map(str::to_owned),
    );
    let oct_31 = crate::ids::new_timed_id("ntf", DEC_1 - 31 * DAY_MS);
    // (table, id, relation)
    let cases = [
        ("deliveries", &dec_1, "deliveries_d20261201"),
        ("deliveries", &dec_2, "deliveries_d20261202"),
        ("deliveries", &nov_1, "deliveries"),
        ("deliveries", &legacy, "deliveries"),
        ("deliveries", &oct_31, "deliveries"),
        ("notifications", &oct_31, "notifications_before_20261101"),
        ("notifications", &nov_1, "notifications"),
        ("notifications", &legacy, "notifications"),
    ];
    for (table, id, relation) in cases {
        assert_eq!(days.relation(table, id), relation, "{table} {id}");
    }
    assert_eq!(days.relation("notifications", &dec_1), "notifications");
    let rows = [&dec_1, &legacy, &dec_2, &dec_1, &nov_1];
    let groups = days.group("deliveries", &rows, |id| id.as_str());
    let shape: Vec<(&str, usize)> = groups.iter().map(|(r, m)| (r.as_str(), m.len())).collect();
    assert_eq!(
        shape,
        [
            ("deliveries_d20261201", 2),
            ("deliveries", 2),
            ("deliveries_d20261202", 1)
        ]
    );
    let cut = pieces(&groups, 1);
    assert_eq!(cut.len(), 5);
    assert!(cut.iter().all(|(_, piece)| piece.len() == 1));
    let dec_1_later = crate::ids::new_timed_id("ntf", DEC_1 + DAY_MS - 1);
    let oct_30 = crate::ids::new_timed_id("ntf", DEC_1 - 32 * DAY_MS);
    // (table, ids, the one relation holding them all)
    let shared: [(&str, Vec<&str>, Option<&str>); 7] = [
        ("deliveries", vec![], None),
        (
            "deliveries",
            vec![&dec_1, &dec_1_later],
            Some("deliveries_d20261201"),
        ),
        ("deliveries", vec![&dec_1, &dec_2], None),
        (
            "deliveries",
            vec![&nov_1, &legacy, &oct_31],
            Some("deliveries"),
        ),
        (
            "notifications",
            vec![&oct_31, &oct_30],
            Some("notifications_before_20261101"),
        ),
        ("notifications", vec![&oct_31, &nov_1], None),
        ("notifications", vec![&legacy], Some("notifications")),
    ];
    for (table, ids, relation) in shared {
        assert_eq!(
            days.shared(table, &ids).as_deref(),
            relation,
            "{table} {ids:?}"
        );
    }
}
