//! Prometheus metrics. Label sets are bounded: zones, records and nodes come from the config,
//! query types and response codes from short fixed lists.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    zone: String,
    qtype: &'static str,
    rcode: &'static str,
    policy: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    record: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

pub struct Metrics {
    registry: Registry,
    queries: Family<QueryLabels, Counter>,
    answer_changes: Family<RecordLabels, Counter>,
    node_healthy: Family<NodeLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let queries = Family::<QueryLabels, Counter>::default();
        registry.register(
            "gslb_queries",
            "DNS queries answered, by zone (`-` when not served), query type, response code and \
             policy (`static` for zone data)",
            queries.clone(),
        );
        let answer_changes = Family::<RecordLabels, Counter>::default();
        registry.register(
            "gslb_answer_changes",
            "Health changes of a node in a GSLB record's pools, which change its answers",
            answer_changes.clone(),
        );
        let node_healthy = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "gslb_node_healthy",
            "1 when this GSLB server's probes find the node up, 0 when down",
            node_healthy.clone(),
        );
        Metrics {
            registry,
            queries,
            answer_changes,
            node_healthy,
        }
    }
}

impl Metrics {
    pub fn query(
        &self,
        zone: &str,
        qtype: &'static str,
        rcode: &'static str,
        policy: &'static str,
    ) {
        self.query_counter(zone, qtype, rcode, policy).inc();
    }

    /// The counter of `query`'s labels, to count reused answers without a label lookup.
    pub fn query_counter(
        &self,
        zone: &str,
        qtype: &'static str,
        rcode: &'static str,
        policy: &'static str,
    ) -> Counter {
        self.queries
            .get_or_create(&QueryLabels {
                zone: zone.to_string(),
                qtype,
                rcode,
                policy,
            })
            .clone()
    }

    pub fn answer_changed(&self, record: &str) {
        self.answer_changes
            .get_or_create(&RecordLabels {
                record: record.to_string(),
            })
            .inc();
    }

    pub fn set_node_health(&self, node: &str, up: bool) {
        self.node_healthy
            .get_or_create(&NodeLabels {
                node: node.to_string(),
            })
            .set(i64::from(up));
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
