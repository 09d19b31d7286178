//! Request metrics in Prometheus text format: a counter and a latency histogram per
//! verb, resource and code, as kube-apiserver's `apiserver_request_total` and
//! `apiserver_request_duration_seconds`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; 14],
}

/// Thread-safe request metrics.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, String, u16), Series>>,
    watchers: std::sync::atomic::AtomicI64,
}

impl Metrics {
    pub fn observe(&self, verb: &str, resource: &str, code: u16, d: Duration) {
        let secs = d.as_secs_f64();
        if let Ok(mut m) = self.series.lock() {
            let s = m
                .entry((verb.to_string(), resource.to_string(), code))
                .or_default();
            s.count += 1;
            s.sum += secs;
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    s.buckets[i] += 1;
                }
            }
        }
    }

    pub fn watch_started(&self) {
        self.watchers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn watch_ended(&self) {
        self.watchers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Requests by verb, resource and HTTP code.\n");
        out.push_str("# TYPE apiserver_request_total counter\n");
        let m = match self.series.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        for ((verb, res, code), s) in m.iter() {
            let _ = writeln!(
                out,
                "apiserver_request_total{{verb=\"{verb}\",resource=\"{res}\",code=\"{code}\"}} {}",
                s.count
            );
        }
        out.push_str("# HELP apiserver_request_duration_seconds Request latency by verb, resource and code.\n");
        out.push_str("# TYPE apiserver_request_duration_seconds histogram\n");
        for ((verb, res, code), s) in m.iter() {
            let l = format!("verb=\"{verb}\",resource=\"{res}\",code=\"{code}\"");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_bucket{{{l},le=\"{b}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_sum{{{l}}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_count{{{l}}} {}",
                s.count
            );
        }
        out.push_str("# HELP apiserver_longrunning_requests Open watches.\n");
        out.push_str("# TYPE apiserver_longrunning_requests gauge\n");
        let _ = writeln!(
            out,
            "apiserver_longrunning_requests{{verb=\"watch\"}} {}",
            self.watchers.load(std::sync::atomic::Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_buckets() {
        let m = Metrics::default();
        m.observe("get", "pods", 200, Duration::from_millis(3));
        m.observe("get", "pods", 200, Duration::from_millis(30));
        let t = m.render();
        assert!(
            t.contains("apiserver_request_total{verb=\"get\",resource=\"pods\",code=\"200\"} 2")
        );
        assert!(t.contains("le=\"0.005\"} 1"));
        assert!(t.contains("le=\"0.05\"} 2"));
    }
}
