//! The chart of a run, as SVG: readings per second (due and acknowledged), ingest latency
//! (p50 and p99 of each second) and the cold sink's lag, on one time axis.

use plotters::prelude::*;
use serde::Serialize;
use weir_simulator::Sample;

/// The cold sink's lag at one moment of a run: records on `telemetry` it has not committed
/// to the lake yet.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LagSample {
    pub t_secs: f64,
    pub cold_sink: u64,
}

type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// Renders the chart; `title` heads it.
pub fn svg(title: &str, timeline: &[Sample], lag: &[LagSample]) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1000, 900)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(title, ("sans-serif", 22))
            .map_err(|e| e.to_string())?;
        let panels = root.split_evenly((3, 1));
        let points = |f: fn(&Sample) -> f64| -> Vec<(f64, f64)> {
            timeline.iter().map(|s| (s.t_secs, f(s))).collect()
        };
        let end = timeline
            .iter()
            .map(|s| s.t_secs)
            .chain(lag.iter().map(|l| l.t_secs))
            .fold(1.0, f64::max);
        panel(
            &panels[0],
            "readings per second",
            end,
            vec![
                ("due", BLUE, points(|s| s.sent as f64)),
                ("acknowledged", GREEN, points(|s| s.acked as f64)),
            ],
        )?;
        panel(
            &panels[1],
            "ingest latency, ms (due to acknowledged)",
            end,
            vec![
                ("p50", BLUE, points(|s| s.p50_ms)),
                ("p99", RED, points(|s| s.p99_ms)),
            ],
        )?;
        panel(
            &panels[2],
            "cold-sink lag on telemetry, records not yet in the lake",
            end,
            vec![(
                "cold sink",
                MAGENTA,
                lag.iter().map(|l| (l.t_secs, l.cold_sink as f64)).collect(),
            )],
        )?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    end: f64,
    series: Vec<Series<'_>>,
) -> Result<(), String> {
    let top = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|(_, y)| *y))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end, 0.0..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, color, points) in series {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_every_series() {
        let timeline: Vec<Sample> = (1..=5)
            .map(|t| Sample {
                t_secs: t as f64,
                sent: 100,
                acked: 99,
                p50_ms: 1.0,
                p99_ms: 5.0,
                max_ms: 9.0,
            })
            .collect();
        let lag = [LagSample {
            t_secs: 2.0,
            cold_sink: 40,
        }];
        let svg = svg("a run", &timeline, &lag).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..50.min(svg.len())]);
        for text in ["a run", "acknowledged", "p99", "cold sink"] {
            assert!(svg.contains(text), "{text} missing");
        }
    }
}
