//! Server-rendered SVG bar charts: no script, no external resource. Labels are escaped here
//! (the SVG is inserted into pages unescaped).

use std::fmt::Write;

const W: u32 = 640;
const H: u32 = 180;
const LABEL_H: u32 = 34;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A bar chart of `bars` (label, value); `show` formats a value for the bar's tooltip and the
/// scale. An empty series renders a note instead of a chart.
pub fn bars(title: &str, bars: &[(String, u64)], show: impl Fn(u64) -> String) -> String {
    if bars.is_empty() || bars.iter().all(|(_, v)| *v == 0) {
        return format!("<p class=\"muted\">{}: nothing to show yet.</p>", escape(title));
    }
    let max = bars.iter().map(|(_, v)| *v).max().unwrap_or(1).max(1);
    let n = u32::try_from(bars.len()).unwrap_or(u32::MAX).max(1);
    let slot = W / n;
    let width = (slot * 7 / 10).clamp(1, 48);
    let plot = H - LABEL_H;
    let mut svg = format!(
        "<figure class=\"chart\"><svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>",
        t = escape(title)
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(0);
        let h = u32::try_from(u128::from(*value) * u128::from(plot - 12) / u128::from(max))
            .unwrap_or(plot);
        let x = i * slot + (slot - width) / 2;
        let _ = write!(
            svg,
            "<g><title>{l}: {v}</title><rect x=\"{x}\" y=\"{y}\" width=\"{width}\" height=\"{h}\" \
             class=\"bar\"/>",
            l = escape(label),
            v = escape(&show(*value)),
            y = plot - h,
        );
        // Labels only where there is room for them.
        if n <= 24 || i % (n / 12).max(1) == 0 {
            let _ = write!(
                svg,
                "<text x=\"{cx}\" y=\"{ty}\" text-anchor=\"middle\">{l}</text>",
                cx = x + width / 2,
                ty = plot + 16,
                l = escape(label),
            );
        }
        svg.push_str("</g>");
    }
    let _ = write!(
        svg,
        "<text x=\"4\" y=\"12\" class=\"scale\">max {}</text></svg><figcaption>{}</figcaption></figure>",
        escape(&show(max)),
        escape(title)
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_escape_and_handle_empty_series() {
        let svg = bars("Runs <b>", &[("a&b".into(), 10), ("c".into(), 5)], |v| format!("{v} s"));
        assert!(svg.contains("<svg") && svg.contains("Runs &lt;b&gt;"), "{svg}");
        assert!(svg.contains("a&amp;b: 10 s") && svg.contains("max 10 s"), "{svg}");
        // The tallest bar fills the plot; the half-size bar is half as tall.
        assert!(svg.contains("height=\"134\"") && svg.contains("height=\"67\""), "{svg}");
        assert!(bars("Empty", &[], |v| v.to_string()).contains("nothing to show"));
    }
}
