//! Request counting per client, route template and status, so Pullwarden and other GitOps tools
//! pointed at the same emulator can be compared request for request.
use super::model::{ClientCounts, RequestCounts};

/// The counters (reset through the admin API).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub counts: RequestCounts,
}

impl Counters {
    /// Records one answered request. `route` is `"METHOD /template"`; `charged` when it was
    /// counted against the caller's rate limit.
    pub fn record(&mut self, client: &str, route: &str, status: u16, charged: bool) {
        let c: &mut ClientCounts = self.counts.clients.entry(client.to_string()).or_default();
        c.total += 1;
        if status == 304 {
            c.not_modified += 1;
        }
        if charged {
            c.charged += 1;
            *c.charged_routes.entry(route.to_string()).or_default() += 1;
        }
        *c.routes
            .entry(route.to_string())
            .or_default()
            .entry(status.to_string())
            .or_default() += 1;
    }
}
