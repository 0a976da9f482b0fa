//! Reports: a markdown summary, the JSON figures, and an SVG plot of a run.

use super::scenarios::Timeline;

/// An SVG line chart of throughput (accepted, delivered per second) and accept p99.
pub fn svg(title: &str, timeline: &Timeline) -> String {
    let (w, h, pad) = (800.0, 360.0, 50.0);
    let n = timeline.delivered_per_second.len().max(1);
    let max_rate = timeline
        .accepted_per_second
        .iter()
        .chain(&timeline.delivered_per_second)
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_ms = timeline
        .accept_p99_ms
        .iter()
        .cloned()
        .fold(1.0_f64, f64::max);
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n.max(2) - 1) as f64;
    let y = |v: f64, max: f64| h - pad - (h - 2.0 * pad) * v / max;
    let line = |values: Vec<f64>, max: f64, color: &str| {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v, max)))
            .collect();
        format!(
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        )
    };
    let accepted: Vec<f64> = timeline
        .accepted_per_second
        .iter()
        .map(|v| *v as f64)
        .collect();
    let delivered: Vec<f64> = timeline
        .delivered_per_second
        .iter()
        .map(|v| *v as f64)
        .collect();
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="20" font-size="14">{title}</text>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="black"/>
<text x="5" y="{pad}">{max_rate:.0}/s</text><text x="{r2}" y="{pad}">{max_ms:.1} ms</text>
<text x="{pad}" y="{b2}">0 s</text><text x="{r}" y="{b2}" text-anchor="end">{n} s</text>
{a}{d}{p}
<text x="{pad}" y="{h3}" fill="#1f77b4">accepted/s</text><text x="160" y="{h3}" fill="#2ca02c">delivered/s</text><text x="280" y="{h3}" fill="#d62728">accept p99 (right axis)</text>
</svg>"##,
        b = h - pad,
        r = w - pad,
        r2 = w - pad + 2.0,
        b2 = h - pad + 15.0,
        h3 = h - 10.0,
        a = line(accepted, max_rate, "#1f77b4"),
        d = line(delivered, max_rate, "#2ca02c"),
        p = line(timeline.accept_p99_ms.clone(), max_ms, "#d62728"),
    )
}
