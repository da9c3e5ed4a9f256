//! Request counting per client, route template and status, so Pullwarden and other GitOps tools
//! pointed at the same emulator can be compared request for request.
use super::model::{ClientCounts, RequestCounts};

/// The counters (reset through the admin API).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub counts: RequestCounts,
}

impl Counters {
    /// Records one answered request. `route` is `"METHOD /template"`.
    pub fn record(&mut self, client: &str, route: &str, status: u16) {
        let c: &mut ClientCounts = self.counts.clients.entry(client.to_string()).or_default();
        c.total += 1;
        if status == 304 {
            c.not_modified += 1;
        }
        *c.routes
            .entry(route.to_string())
            .or_default()
            .entry(status.to_string())
            .or_default() += 1;
    }
}
