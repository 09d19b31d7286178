//! `h8s server` flags of the API's limits and fairness (kube-apiserver's names where kube
//! has the limit; `0` turns a cap off).

use std::time::Duration;

use crate::agent::parse_duration;

/// In-flight requests, fair queuing, connections, watches.
#[derive(clap::Args, Debug, Clone)]
pub struct LimitsArgs {
    /// Read-only requests executing at once (kube-apiserver's flag; 0: no limit).
    #[arg(long = "max-requests-inflight", default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// Mutating requests executing at once (kube-apiserver's flag; 0: no limit).
    #[arg(long = "max-mutating-requests-inflight", default_value_t = 200)]
    pub max_mutating_requests_inflight: usize,
    /// Queue requests fairly (per tenant, then per user) when the seats are taken;
    /// `false`: refuse at once with 429.
    #[arg(long = "enable-priority-and-fairness", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_priority_and_fairness: bool,
    /// The percentage of the in-flight seats kept for the control plane and nodes.
    #[arg(long = "apf-system-share", default_value_t = 25, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub apf_system_share: u8,
    /// Requests one user may have waiting for a seat.
    #[arg(long = "apf-queue-length-limit", default_value_t = 50)]
    pub apf_queue_length_limit: usize,
    /// Requests one tenant may have waiting for a seat.
    #[arg(long = "apf-tenant-queue-limit", default_value_t = 200)]
    pub apf_tenant_queue_limit: usize,
    /// Requests that may wait for a seat in all, per priority level and kind.
    #[arg(long = "apf-total-queue-limit", default_value_t = 2000)]
    pub apf_total_queue_limit: usize,
    /// The longest a request waits for a seat before 429.
    #[arg(long = "apf-queue-wait", default_value = "15s", value_parser = parse_duration)]
    pub apf_queue_wait: Duration,
    /// Long-running requests (watches, exec, attach, port-forward, proxy, log -f) open
    /// at once.
    #[arg(long = "max-long-running-requests", default_value_t = 10_000)]
    pub max_long_running_requests: usize,
    /// Watches one user may have open.
    #[arg(long = "max-watches-per-user", default_value_t = 1000)]
    pub max_watches_per_user: usize,
    /// Connections open at once; more are closed right after accept.
    #[arg(long = "max-connections", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Connections open at once from one source IP.
    #[arg(long = "max-connections-per-ip", default_value_t = 500)]
    pub max_connections_per_ip: usize,
    /// HTTP/2 streams per connection (kube-apiserver's flag; 0: kube's default, 100).
    /// h8s's default is 1000: its own components multiplex all their watches over one
    /// HTTP/2 connection.
    #[arg(long = "http2-max-streams-per-connection", default_value_t = 1000)]
    pub http2_max_streams_per_connection: u32,
    /// A connection with no request under way this long is closed (0s: never).
    #[arg(long = "idle-connection-timeout", default_value = "90s", value_parser = parse_duration)]
    pub idle_connection_timeout: Duration,
    /// The longest a client may take to send request headers; also HTTP/1.1's idle time
    /// between requests.
    #[arg(long = "read-header-timeout", default_value = "32s", value_parser = parse_duration)]
    pub read_header_timeout: Duration,
    /// Bytes a watch may have encoded and not yet sent.
    #[arg(long = "watch-buffer-bytes", default_value_t = 4 << 20)]
    pub watch_buffer_bytes: usize,
    /// How long a watch waits for a slow reader to make room before ending it.
    #[arg(long = "watch-slow-reader-timeout", default_value = "10s", value_parser = parse_duration)]
    pub watch_slow_reader_timeout: Duration,
    /// How often a watch that allows bookmarks gets one (carrying the store's revision).
    #[arg(long = "watch-bookmark-interval", default_value = "10s", value_parser = parse_duration)]
    pub watch_bookmark_interval: Duration,
    /// How old a resource's object count may get before it is counted again (a LIST's
    /// width in seats follows the objects it reads).
    #[arg(long = "apf-object-count-interval", default_value = "10s", value_parser = parse_duration)]
    pub apf_object_count_interval: Duration,
    /// How often priority levels lend and borrow seats for their demand
    /// (`lendablePercent`, `borrowingLimitPercent`; 0s: never).
    #[arg(long = "apf-borrowing-interval", default_value = "10s", value_parser = parse_duration)]
    pub apf_borrowing_interval: Duration,
}

impl LimitsArgs {
    /// The API server's setting.
    pub fn config(&self) -> h8s_apiserver::LimitsConfig {
        h8s_apiserver::LimitsConfig {
            max_requests_inflight: self.max_requests_inflight,
            max_mutating_requests_inflight: self.max_mutating_requests_inflight,
            priority_and_fairness: self.enable_priority_and_fairness,
            system_share_percent: self.apf_system_share,
            queue_length_limit: self.apf_queue_length_limit,
            tenant_queue_limit: self.apf_tenant_queue_limit,
            total_queue_limit: self.apf_total_queue_limit,
            queue_wait: self.apf_queue_wait,
            max_long_running: self.max_long_running_requests,
            max_watches_per_user: self.max_watches_per_user,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            http2_max_streams_per_connection: self.http2_max_streams_per_connection,
            idle_timeout: self.idle_connection_timeout,
            read_header_timeout: self.read_header_timeout,
            watch_buffer_bytes: self.watch_buffer_bytes,
            watch_slow_reader_timeout: self.watch_slow_reader_timeout,
            watch_bookmark_interval: self.watch_bookmark_interval,
            object_count_interval: self.apf_object_count_interval,
            borrowing_interval: self.apf_borrowing_interval,
            ..Default::default()
        }
    }
}
