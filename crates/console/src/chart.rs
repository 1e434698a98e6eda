//! Charts drawn as SVG on the server: stacked bars (requests per verdict over time) and
//! lines (tokens per group over time). The geometry is computed here; the markup is an
//! askama template, so every label is escaped like any other text, and colours come from
//! CSS classes (no inline style).

use crate::view;
use askama::Template;

/// Drawing area, in SVG user units (the SVG scales to its container).
const W: f64 = 960.0;
const H: f64 = 260.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;
const RIGHT: f64 = 12.0;

/// One coloured part of a bar.
pub(crate) struct Seg {
    pub(crate) y: String,
    pub(crate) h: String,
    pub(crate) class: &'static str,
    pub(crate) title: String,
}

/// One bar.
pub(crate) struct Bar {
    pub(crate) x: String,
    pub(crate) w: String,
    pub(crate) segs: Vec<Seg>,
}

/// A labelled position on an axis.
pub(crate) struct Tick {
    pub(crate) at: String,
    pub(crate) label: String,
}

/// One line series.
pub(crate) struct Line {
    pub(crate) points: String,
    pub(crate) class: String,
    pub(crate) label: String,
    pub(crate) total: String,
}

#[derive(Template)]
#[template(path = "chart_bars.html")]
pub(crate) struct Bars {
    pub(crate) id: &'static str,
    pub(crate) title: String,
    pub(crate) bars: Vec<Bar>,
    pub(crate) y_ticks: Vec<Tick>,
    pub(crate) x_ticks: Vec<Tick>,
    pub(crate) legend: Vec<(&'static str, String)>,
    pub(crate) width: f64,
    pub(crate) height: f64,
    pub(crate) base: String,
    pub(crate) left: String,
    pub(crate) right: String,
}

#[derive(Template)]
#[template(path = "chart_lines.html")]
pub(crate) struct Lines {
    pub(crate) id: &'static str,
    pub(crate) title: String,
    pub(crate) lines: Vec<Line>,
    pub(crate) y_ticks: Vec<Tick>,
    pub(crate) x_ticks: Vec<Tick>,
    pub(crate) width: f64,
    pub(crate) height: f64,
    pub(crate) base: String,
    pub(crate) left: String,
    pub(crate) right: String,
}

fn f(v: f64) -> String {
    format!("{v:.1}")
}

/// A "nice" axis maximum at or above `max` (1, 2 or 5 times a power of ten).
fn nice(max: u64) -> u64 {
    if max == 0 {
        return 1;
    }
    let mut p = 1u64;
    while p.saturating_mul(10) <= max {
        p = p.saturating_mul(10);
    }
    for m in [1u64, 2, 5, 10] {
        let v = p.saturating_mul(m);
        if v >= max {
            return v;
        }
    }
    p.saturating_mul(10)
}

fn y_of(v: u64, top: u64) -> f64 {
    let plot = H - TOP - BOTTOM;
    H - BOTTOM - plot * (v as f64 / top as f64)
}

fn y_ticks(top: u64) -> Vec<Tick> {
    (0..=4)
        .map(|i| {
            let v = top / 4 * i;
            Tick {
                at: f(y_of(v, top)),
                label: view::short(v),
            }
        })
        .collect()
}

/// Labels for about six of `n` buckets starting at `start_ms`, `step_ms` apart.
fn x_ticks(n: usize, start_ms: i64, step_ms: i64) -> Vec<Tick> {
    let every = n.div_ceil(6).max(1);
    let slot = (W - LEFT - RIGHT) / n.max(1) as f64;
    (0..n)
        .step_by(every)
        .map(|i| {
            let ms = start_ms.saturating_add(step_ms.saturating_mul(i as i64));
            let label = if step_ms >= 86_400_000 {
                view::time_ms(ms).get(5..10).unwrap_or("").to_owned()
            } else if step_ms >= 3_600_000 && n as i64 * step_ms > 86_400_000 {
                view::time_ms(ms).get(5..13).unwrap_or("").to_owned() + "h"
            } else {
                view::clock_ms(ms).get(..5).unwrap_or("").to_owned()
            };
            Tick {
                at: f(LEFT + slot * (i as f64 + 0.5)),
                label,
            }
        })
        .collect()
}

/// Stacked bars: `values[bucket][series]`, series named and styled by `series`.
pub(crate) fn bars(
    id: &'static str,
    title: String,
    series: &[(&'static str, &str)],
    values: &[Vec<u64>],
    start_ms: i64,
    step_ms: i64,
) -> Bars {
    let n = values.len();
    let max = values
        .iter()
        .map(|b| b.iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let top = nice(max);
    let slot = (W - LEFT - RIGHT) / n.max(1) as f64;
    let bars = values
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut acc = 0u64;
            let segs = b
                .iter()
                .zip(series)
                .filter(|(v, _)| **v > 0)
                .map(|(v, (class, name))| {
                    let y1 = y_of(acc, top);
                    acc += v;
                    let y2 = y_of(acc, top);
                    let when =
                        view::time_ms(start_ms.saturating_add(step_ms.saturating_mul(i as i64)));
                    Seg {
                        y: f(y2),
                        h: f((y1 - y2).max(0.5)),
                        class,
                        title: format!("{when} UTC · {name}: {}", view::thousands(*v)),
                    }
                })
                .collect();
            Bar {
                x: f(LEFT + slot * i as f64 + slot * 0.12),
                w: f((slot * 0.76).max(1.0)),
                segs,
            }
        })
        .collect();
    Bars {
        id,
        title,
        bars,
        y_ticks: y_ticks(top),
        x_ticks: x_ticks(n, start_ms, step_ms),
        legend: series.iter().map(|(c, n)| (*c, (*n).to_owned())).collect(),
        width: W,
        height: H,
        base: f(H - BOTTOM),
        left: f(LEFT),
        right: f(W - RIGHT),
    }
}

/// Lines: `(label, values per bucket)`, at most a handful.
pub(crate) fn lines(
    id: &'static str,
    title: String,
    series: &[(String, Vec<u64>)],
    start_ms: i64,
    step_ms: i64,
) -> Lines {
    let n = series.first().map_or(0, |s| s.1.len());
    let max = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .max()
        .unwrap_or(0);
    let top = nice(max);
    let slot = (W - LEFT - RIGHT) / n.max(1) as f64;
    let lines = series
        .iter()
        .enumerate()
        .map(|(k, (label, vals))| Line {
            points: vals
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{},{}", f(LEFT + slot * (i as f64 + 0.5)), f(y_of(*v, top))))
                .collect::<Vec<_>>()
                .join(" "),
            class: format!("s{}", k % 6),
            label: if label.is_empty() {
                "(unknown)".to_owned()
            } else {
                label.clone()
            },
            total: view::thousands(vals.iter().sum()),
        })
        .collect();
    Lines {
        id,
        title,
        lines,
        y_ticks: y_ticks(top),
        x_ticks: x_ticks(n, start_ms, step_ms),
        width: W,
        height: H,
        base: f(H - BOTTOM),
        left: f(LEFT),
        right: f(W - RIGHT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_nice() {
        assert_eq!(nice(0), 1);
        assert_eq!(nice(7), 10);
        assert_eq!(nice(13), 20);
        assert_eq!(nice(480), 500);
        assert_eq!(nice(1000), 1000);
    }

    #[test]
    fn bars_stack_and_labels_are_escaped() {
        let b = bars(
            "c",
            "t".into(),
            &[("v-allow", "allow"), ("v-deny", "<deny>")],
            &[vec![3, 1], vec![0, 0]],
            0,
            60_000,
        );
        assert_eq!(b.bars[0].segs.len(), 2);
        assert!(b.bars[1].segs.is_empty());
        let svg = b.render().expect("render");
        assert!(
            svg.contains("&#60;deny&#62;") && !svg.contains("<deny>"),
            "{svg}"
        );
        let l = lines(
            "l",
            "t".into(),
            &[("a\"b".into(), vec![1, 2, 3])],
            0,
            60_000,
        );
        let svg = l.render().expect("render");
        assert!(svg.contains("a&#34;b"), "{svg}");
    }
}
