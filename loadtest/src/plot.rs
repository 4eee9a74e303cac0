//! `--plot FILE`: a picture of a run's publish→deliver latency — p50, p99 and max for every
//! second of the run, and the histogram of all deliveries — as SVG or PNG (by the file's
//! extension). Text is laid out with a TrueType font from the system (DejaVu or Liberation
//! Sans, as Debian installs them).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// One delivery: when it arrived (ms since the clients were started) and its latency (µs).
pub type Sample = (u32, u32);

const SIZE: (u32, u32) = (1200, 800);
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// A picture that can be drawn on any plotters backend.
trait Picture {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static;
}

/// Draws `picture` into `path`, as SVG or PNG by the file's extension.
fn render_picture(path: &Path, picture: &impl Picture) -> Result<()> {
    register_font()?;
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("svg") => picture.draw(SVGBackend::new(path, SIZE).into_drawing_area()),
        Some("png") => picture.draw(BitMapBackend::new(path, SIZE).into_drawing_area()),
        _ => bail!("--plot wants a file ending in .svg or .png, not {}", path.display()),
    }
    .with_context(|| format!("drawing {}", path.display()))
}

/// Draws `samples` into `path` (`.svg` or `.png`) under `title`.
pub fn render(path: &Path, title: &str, samples: &[Sample]) -> Result<()> {
    if samples.is_empty() {
        bail!("nothing was delivered: no latency to plot");
    }
    struct Latency<'a>(&'a str, &'a [Sample]);
    impl Picture for Latency<'_> {
        fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()>
        where
            DB::ErrorType: 'static,
        {
            draw(root, self.0, self.1)
        }
    }
    render_picture(path, &Latency(title, samples))
}

/// A failover run as [`render_failover`] draws it; times in seconds since the kill.
pub struct Failover<'a> {
    /// The picture's title.
    pub title: &'a str,
    /// Clients that had to reconnect.
    pub clients: usize,
    /// When each client was back, in order.
    pub reconnected: &'a [f64],
    /// Each delivery: when it arrived and how long after its publish (ms).
    pub lags: &'a [(f64, f64)],
}

/// Draws a failover run into `path`: clients back over time (top), and the p99 and max
/// publish→deliver lag of the deliveries in each quarter second (bottom), which shows the
/// replayed backlog draining.
pub fn render_failover(path: &Path, run: &Failover<'_>) -> Result<()> {
    if run.lags.is_empty() {
        bail!("nothing was delivered: no lag to plot");
    }
    render_picture(path, run)
}

/// p99 and max (ms) of the lags in each `width`-second bucket, from `start`.
pub fn lag_buckets(lags: &[(f64, f64)], start: f64, width: f64) -> Vec<(f64, f64, f64)> {
    let index = |at: f64| ((at - start) / width).floor().max(0.0) as usize;
    let n = lags.iter().map(|l| index(l.0)).max().map_or(0, |i| i + 1);
    let mut buckets: Vec<Vec<f64>> = vec![Vec::new(); n];
    for &(at, lag) in lags {
        buckets[index(at)].push(lag);
    }
    buckets
        .into_iter()
        .enumerate()
        .filter(|(_, b)| !b.is_empty())
        .map(|(i, mut b)| {
            b.sort_unstable_by(f64::total_cmp);
            let p99 = b[((b.len() - 1) as f64 * 0.99).round() as usize];
            (start + i as f64 * width, p99, b[b.len() - 1])
        })
        .collect()
}

impl Picture for Failover<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e:?}");
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(self.title, ("sans-serif", 24)).map_err(err)?;
        let (top, bottom) = root.split_vertically(SIZE.1 / 2 - 20);
        let first = self.lags.iter().map(|l| l.0).fold(0.0, f64::min).floor();
        let last = self.lags.iter().map(|l| l.0).chain(self.reconnected.iter().copied()).fold(1.0, f64::max).ceil();

        let mut back = ChartBuilder::on(&top)
            .caption("clients reconnected (seconds since the kill)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(first..last, 0usize..self.clients + self.clients / 20 + 1)
            .map_err(err)?;
        back.configure_mesh().x_desc("s").y_desc("clients").draw().map_err(err)?;
        // Clients back at every 20 ms (a point per client would make a 15,000-client run's
        // picture megabytes of SVG).
        let ticks = ((last - first) / 0.02).ceil() as usize;
        let counts = (0..=ticks).map(|k| {
            let at = first + k as f64 * 0.02;
            (at, self.reconnected.partition_point(|&t| t <= at))
        });
        back.draw_series(LineSeries::new(counts, BLUE.stroke_width(2))).map_err(err)?;

        let buckets = lag_buckets(self.lags, first, 0.25);
        let top_ms = buckets.iter().map(|b| b.2).fold(1.0, f64::max);
        let mut lag = ChartBuilder::on(&bottom)
            .caption("publish→deliver lag per quarter second (replayed events included)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(first..last, 0f64..top_ms * 1.05)
            .map_err(err)?;
        lag.configure_mesh().x_desc("s").y_desc("ms").draw().map_err(err)?;
        for (name, color, pick) in [("p99", RED, 0usize), ("max", RGBColor(128, 128, 128), 1)] {
            let value = move |b: &(f64, f64, f64)| if pick == 0 { b.1 } else { b.2 };
            lag.draw_series(LineSeries::new(buckets.iter().map(|b| (b.0, value(b))), color.stroke_width(2)))
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        lag.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
        root.present().map_err(err)?;
        Ok(())
    }
}

fn register_font() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        FONTS.iter().find_map(|p| std::fs::read(p).ok()).is_some_and(|bytes| {
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    });
    if ok {
        Ok(())
    } else {
        bail!("--plot needs a TrueType font ({}); install fonts-dejavu-core", FONTS[0])
    }
}

/// p50, p99 and max latency (ms) of the deliveries that arrived in each second.
pub fn per_second(samples: &[Sample]) -> Vec<(u32, f64, f64, f64)> {
    let last = samples.iter().map(|s| s.0 / 1000).max().unwrap_or(0);
    let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); last as usize + 1];
    for &(at, latency) in samples {
        buckets[(at / 1000) as usize].push(latency);
    }
    buckets
        .into_iter()
        .enumerate()
        .filter(|(_, b)| !b.is_empty())
        .map(|(second, mut b)| {
            b.sort_unstable();
            let q = |f: f64| b[((b.len() - 1) as f64 * f).round() as usize] as f64 / 1000.0;
            (second as u32, q(0.5), q(0.99), q(1.0))
        })
        .collect()
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, title: &str, samples: &[Sample]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let title = format!("{title}: {} deliveries", samples.len());
    let root = root.titled(&title, ("sans-serif", 24)).map_err(err)?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2 - 20);

    let seconds = per_second(samples);
    let max_ms = seconds.iter().map(|s| s.3).fold(1.0, f64::max);
    let last = seconds.last().map_or(1, |s| s.0 + 1);
    let mut chart = ChartBuilder::on(&top)
        .caption("latency by second of the run", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0u32..last, 0f64..max_ms * 1.05)
        .map_err(err)?;
    chart.configure_mesh().x_desc("second").y_desc("ms").draw().map_err(err)?;
    for (name, color, pick) in [("p50", BLUE, 1usize), ("p99", RED, 2), ("max", RGBColor(128, 128, 128), 3)] {
        let value = |s: &(u32, f64, f64, f64)| [s.1, s.2, s.3][pick - 1];
        chart
            .draw_series(LineSeries::new(seconds.iter().map(|s| (s.0, value(s))), color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;

    // Histogram up to the 99.9th percentile (the tail beyond it would flatten the rest).
    let mut sorted: Vec<u32> = samples.iter().map(|s| s.1).collect();
    sorted.sort_unstable();
    let cap_us = sorted[(sorted.len() - 1) * 999 / 1000].max(1);
    const BINS: u32 = 60;
    let width = cap_us.div_ceil(BINS).max(1);
    let mut counts = vec![0u32; BINS as usize];
    for &l in sorted.iter().take_while(|&&l| l <= cap_us) {
        counts[((l / width) as usize).min(BINS as usize - 1)] += 1;
    }
    let top_count = counts.iter().copied().max().unwrap_or(1);
    let mut hist = ChartBuilder::on(&bottom)
        .caption(format!("deliveries by latency (up to p99.9 = {:.1} ms)", cap_us as f64 / 1000.0), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d((0u32..BINS).into_segmented(), 0u32..top_count + top_count / 20 + 1)
        .map_err(err)?;
    hist.configure_mesh()
        .x_desc("ms")
        .x_label_formatter(&|v| match v {
            SegmentValue::Exact(b) | SegmentValue::CenterOf(b) => format!("{:.1}", (b * width) as f64 / 1000.0),
            SegmentValue::Last => String::new(),
        })
        .y_desc("deliveries")
        .draw()
        .map_err(err)?;
    hist.draw_series(
        Histogram::vertical(&hist)
            .style(BLUE.mix(0.6).filled())
            .data(counts.iter().enumerate().map(|(i, c)| (i as u32, *c))),
    )
    .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_get_their_own_percentiles() {
        let mut samples: Vec<Sample> = (0..100).map(|i| (10, 1000 * (i + 1))).collect();
        samples.push((2500, 7000));
        let s = per_second(&samples);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].0, s[0].1, s[0].2, s[0].3), (0, 51.0, 99.0, 100.0));
        assert_eq!((s[1].0, s[1].1, s[1].3), (2, 7.0, 7.0));
    }

    #[test]
    fn draws_svg_and_png_and_refuses_other_formats() {
        // scripts/test.sh installs the font when the machine has none.
        let dir = std::env::temp_dir().join(format!("sb-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let samples: Vec<Sample> = (0..5000).map(|i| (i * 2, 500 + (i * 37) % 20_000)).collect();
        for name in ["run.svg", "run.png"] {
            let path = dir.join(name);
            render(&path, "fanout test", &samples).expect("drawn");
            let bytes = std::fs::read(&path).expect("written");
            assert!(bytes.len() > 1000, "{name} is {} bytes", bytes.len());
        }
        assert!(std::fs::read_to_string(dir.join("run.svg")).expect("svg").contains("<svg"));
        assert!(std::fs::read(dir.join("run.png")).expect("png").starts_with(b"\x89PNG"));
        assert!(render(&dir.join("run.gif"), "t", &samples).is_err());
        let reconnected: Vec<f64> = (0..300).map(|i| 0.5 + i as f64 / 100.0).collect();
        let lags: Vec<(f64, f64)> = (0..2000).map(|i| (-2.0 + i as f64 / 200.0, (i % 97) as f64)).collect();
        let run = Failover { title: "failover test", clients: 300, reconnected: &reconnected, lags: &lags };
        render_failover(&dir.join("failover.svg"), &run).expect("drawn");
        assert!(std::fs::read_to_string(dir.join("failover.svg")).expect("svg").contains("clients reconnected"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn lag_buckets_take_the_tail_of_each_quarter_second() {
        let mut lags: Vec<(f64, f64)> = (1..=100).map(|i| (-1.0 + 0.001 * i as f64, i as f64)).collect();
        lags.push((0.6, 5.0));
        let b = lag_buckets(&lags, -1.0, 0.25);
        assert_eq!(b, vec![(-1.0, 99.0, 100.0), (0.5, 5.0, 5.0)]);
    }
}
