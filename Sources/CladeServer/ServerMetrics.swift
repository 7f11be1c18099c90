import CladeModel
import Foundation
import Metrics
import Prometheus

/// The daemon's metrics: swift-metrics counters and timers (errors by route, request, fork and
/// branch latency) exported by the Prometheus backend, plus gauges set at each scrape from the
/// store (sandboxes by state, snapshots, bytes stored). forkd's stable names are kept alongside.
public final class ServerMetrics: Sendable {
    let registry: PrometheusCollectorRegistry

    /// Bootstraps swift-metrics with a Prometheus registry; call once per process.
    public static func bootstrap() -> ServerMetrics {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return ServerMetrics(registry: registry)
    }

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        registry.makeGauge(name: "forkd_build_info", labels: [("version", cladeVersion)]).set(to: 1.0)
        registry.makeGauge(name: "clade_build_info", labels: [("version", cladeVersion)]).set(to: 1.0)
    }

    func update(sandboxCounts: [String: Int], snapshotCount: Int, storedBytes: Int64) {
        for state in ["booting", "running", "paused", "standby", "dead"] {
            registry.makeGauge(name: "clade_sandboxes", labels: [("state", state)]).set(to: Double(sandboxCounts[state] ?? 0))
        }
        registry.makeGauge(name: "forkd_sandboxes_active").set(to: Double(sandboxCounts["running"] ?? 0))
        registry.makeGauge(name: "forkd_snapshots_total").set(to: Double(snapshotCount))
        registry.makeGauge(name: "clade_snapshots").set(to: Double(snapshotCount))
        registry.makeGauge(name: "clade_stored_bytes").set(to: Double(storedBytes))
    }

    func render() -> String { registry.emitToString() }
}
