//! `GET /sessions/{id}/loss.svg`: a real chart of the history. The SVG must be well-formed
//! XML with the title, the axes' descriptions and tick labels, and one polyline whose points
//! follow the losses (a falling loss goes down the page, linearly or on a log axis), at a
//! size that stays bounded however long the history is.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Resp, TestApp, assert_problem, config, spawn_app};

/// The series' stroke colour in the SVG (the chart's one data line).
const SERIES: &str = "#1F77B4";

struct Svg {
    width: u32,
    height: u32,
    texts: Vec<String>,
    /// The series' points, in pixels (y grows down the page).
    series: Vec<(f64, f64)>,
}

fn parse_svg(resp: &Resp) -> Svg {
    resp.expect(200);
    assert!(
        resp.content_type().starts_with("image/svg+xml"),
        "{}: content type {:?}",
        resp.request,
        resp.content_type()
    );
    let doc = roxmltree::Document::parse(&resp.body)
        .unwrap_or_else(|e| panic!("{}: the SVG is not well-formed XML: {e}", resp.request));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg", "{}", resp.request);
    let dim = |name: &str| -> u32 {
        root.attribute(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{}: <svg> has no numeric {name}", resp.request))
    };
    let texts = root
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect();
    let lines: Vec<_> = root
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(SERIES))
        .collect();
    assert!(
        lines.len() <= 1,
        "{}: {} series polylines",
        resp.request,
        lines.len()
    );
    let series = lines
        .first()
        .map(|line| {
            line.attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').expect("x,y");
                    (x.parse().expect("x"), y.parse().expect("y"))
                })
                .collect()
        })
        .unwrap_or_default();
    Svg {
        width: dim("width"),
        height: dim("height"),
        texts,
        series,
    }
}

impl Svg {
    fn has_text(&self, needle: &str) -> bool {
        self.texts.iter().any(|t| t.contains(needle))
    }
}

/// The notebook's session after its 100 epochs: the loss falls from 23.5 to 0.0012.
async fn trained(app: &TestApp) -> (String, Vec<f64>) {
    let (id, _) = app
        .create_session(&json!({"layers": [4, 3], "init": {"seed": 0}}))
        .await;
    app.put_builtin(&id, "cat-dog-ship").await;
    app.train(&id, 100).await;
    let page = app
        .get(&format!("/sessions/{id}/loss"))
        .await
        .expect_json(200);
    let mut losses = vec![page["initial_loss"].as_f64().unwrap()];
    losses.extend(
        page["loss"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap()),
    );
    (id, losses)
}

/// Fits `y = a + b * f(loss)` through the first and last points and returns the largest
/// distance of any point from that line, in pixels.
fn misfit(series: &[(f64, f64)], losses: &[f64], f: impl Fn(f64) -> f64) -> f64 {
    let (first, last) = (0, losses.len() - 1);
    let b = (series[last].1 - series[first].1) / (f(losses[last]) - f(losses[first]));
    let a = series[first].1 - b * f(losses[first]);
    series
        .iter()
        .zip(losses)
        .map(|(&(_, y), &l)| (y - (a + b * f(l))).abs())
        .fold(0.0, f64::max)
}

#[tokio::test]
async fn the_chart_draws_the_history_with_axes_title_and_a_falling_line() {
    let app = spawn_app(config()).await;
    let (id, losses) = trained(&app).await;
    let svg = parse_svg(&app.get(&format!("/sessions/{id}/loss.svg")).await);
    assert_eq!((svg.width, svg.height), (640, 400), "the default size");
    for want in [
        "layers [4, 3]",
        "learning rate 0.0001",
        "epoch",
        "loss (mean cross-entropy)",
        "epoch 100: loss 0.0011888",
    ] {
        assert!(svg.has_text(want), "no text {want:?} in {:?}", svg.texts);
    }
    // Tick labels on both axes: epochs 0 and 100, and loss values.
    assert!(svg.texts.iter().any(|t| t == "0") && svg.texts.iter().any(|t| t == "100"));
    assert!(svg.texts.iter().any(|t| t == "20"), "{:?}", svg.texts);

    // 101 points (the starting loss and 100 epochs), left to right, all inside the canvas.
    assert_eq!(svg.series.len(), losses.len(), "one point per epoch");
    assert!(svg.series.windows(2).all(|w| w[0].0 <= w[1].0), "x grows");
    assert!(
        svg.series
            .iter()
            .all(|&(x, y)| (0.0..=640.0).contains(&x) && (0.0..=400.0).contains(&y))
    );
    // The loss falls, so the line goes down the page (SVG's y grows downwards), and each
    // point sits where a linear axis puts its loss, to within a pixel's rounding.
    assert!(
        svg.series.last().unwrap().1 > svg.series[0].1 + 200.0,
        "{:?}",
        svg.series
    );
    for (w, l) in svg.series.windows(2).zip(losses.windows(2)) {
        if l[1] < l[0] {
            assert!(w[1].1 >= w[0].1, "loss {l:?} drawn at y {w:?}");
        }
    }
    let linear = misfit(&svg.series, &losses, |l| l);
    assert!(linear <= 1.0, "points stray {linear} px from a linear axis");

    // On a log axis the same points follow log10(loss) instead, which differs visibly:
    // epoch 20 (loss 0.007) sits on the floor of a linear axis, well above it on a log one.
    let log = parse_svg(&app.get(&format!("/sessions/{id}/loss.svg?log=true")).await);
    assert!(log.has_text("log scale"), "{:?}", log.texts);
    assert_eq!(log.series.len(), losses.len());
    let fit = misfit(&log.series, &losses, f64::log10);
    assert!(fit <= 1.0, "points stray {fit} px from a log axis");
    assert!(
        misfit(&log.series, &losses, |l| l) > 50.0,
        "the log chart looks linear"
    );
    assert!(
        log.series[20].1 < svg.series[20].1 - 40.0,
        "epoch 20 at y {} on the log axis, {} on the linear one",
        log.series[20].1,
        svg.series[20].1
    );
    let explicit = app.get(&format!("/sessions/{id}/loss.svg?log=false")).await;
    assert_eq!(
        parse_svg(&explicit).series,
        svg.series,
        "log=false is linear"
    );
}

#[tokio::test]
async fn size_is_chosen_within_bounds_and_bad_parameters_are_refused() {
    let app = spawn_app(config()).await;
    let (id, losses) = trained(&app).await;
    let svg = parse_svg(
        &app.get(&format!("/sessions/{id}/loss.svg?width=1200&height=300"))
            .await,
    );
    assert_eq!((svg.width, svg.height), (1200, 300));
    assert!(
        svg.series.iter().any(|&(x, _)| x > 1000.0),
        "the line spans the width"
    );
    assert!(misfit(&svg.series, &losses, |l| l) <= 1.0);
    for (q, status, code) in [
        ("width=199", 422, "invalid_value"),
        ("width=4001", 422, "invalid_value"),
        ("height=149", 422, "invalid_value"),
        ("height=100000", 422, "invalid_value"),
        ("width=-5", 422, "invalid_value"),
        ("width=abc", 400, "invalid_request"),
        ("width=640.5", 400, "invalid_request"),
        ("height=", 400, "invalid_request"),
        ("log=yes", 400, "invalid_request"),
        ("log=1", 400, "invalid_request"),
    ] {
        let resp = app.get(&format!("/sessions/{id}/loss.svg?{q}")).await;
        let problem = assert_problem(&resp, status, code);
        let name = q.split('=').next().unwrap();
        assert!(
            problem["detail"].as_str().unwrap_or("").contains(name),
            "{q}: the detail does not name {name}: {problem}"
        );
    }
    // Whole numbers are integers, as everywhere in the API.
    let svg = parse_svg(&app.get(&format!("/sessions/{id}/loss.svg?width=8e2")).await);
    assert_eq!(svg.width, 800);
    let unknown = "00000000-0000-4000-8000-000000000000";
    let resp = app.get(&format!("/sessions/{unknown}/loss.svg")).await;
    assert_problem(&resp, 404, "not_found");
    let resp = app
        .send(
            Method::POST,
            &format!("/sessions/{id}/loss.svg"),
            None,
            None,
        )
        .await;
    assert_problem(&resp, 405, "method_not_allowed");
}

#[tokio::test]
async fn an_empty_history_is_a_chart_that_says_so() {
    let app = spawn_app(config()).await;
    let (id, _) = app.create_session(&json!({"layers": [4, 3]})).await;
    for q in ["", "?log=true"] {
        let svg = parse_svg(&app.get(&format!("/sessions/{id}/loss.svg{q}")).await);
        assert!(svg.series.is_empty(), "{q}: a line without data");
        assert!(
            svg.has_text("No loss history yet"),
            "{q}: no note in {:?}",
            svg.texts
        );
        assert!(svg.has_text("epoch"), "{q}: the axes are drawn");
    }
}

#[tokio::test]
async fn a_million_epochs_draw_a_bounded_chart() {
    let app = spawn_app(config()).await;
    // A history of a million entries, by import: a slow descent with a spike at 700,000.
    let n = 1_000_000usize;
    let loss: Vec<f64> = (0..n)
        .map(|k| {
            let base = 2.0 / (1.0 + k as f64 / 1000.0);
            if k == 700_000 { 5.0 } else { base }
        })
        .collect();
    let doc = json!({
        "format": "backprop-server/session-v1",
        "layers": [4, 3],
        "weights": [vec![vec![0.0; 4]; 3]],
        "loss": loss,
        "initial_loss": 2.5,
    });
    let imported: Value = app.post("/sessions/import", &doc).await.expect_json(201);
    let id = imported["id"].as_str().unwrap();
    let started = std::time::Instant::now();
    let resp = app.get(&format!("/sessions/{id}/loss.svg")).await;
    let took = started.elapsed();
    let svg = parse_svg(&resp);
    assert!(
        resp.body.len() < 200_000,
        "a million points made a {} byte SVG",
        resp.body.len()
    );
    assert!(
        svg.series.len() <= 4 * 640,
        "{} points drawn for a 640-pixel chart",
        svg.series.len()
    );
    assert!(
        svg.series.len() >= 640,
        "too few points: {}",
        svg.series.len()
    );
    // The spike survives decimation: the highest point of the line is the 5.0 at 700,000,
    // 70% of the way along the x axis.
    let top = svg
        .series
        .iter()
        .copied()
        .fold((0.0, f64::INFINITY), |a, p| if p.1 < a.1 { p } else { a });
    let (x0, x1) = (svg.series[0].0, svg.series.last().unwrap().0);
    let at = (top.0 - x0) / (x1 - x0);
    assert!(
        (at - 0.7).abs() < 0.01,
        "the spike is drawn at {at} of the axis"
    );
    assert!(svg.has_text("epoch 1000000"), "{:?}", svg.texts);
    // Far under the test client's timeout, also for a debug build on a busy machine.
    assert!(took.as_secs() < 10, "the chart took {took:?}");
}
