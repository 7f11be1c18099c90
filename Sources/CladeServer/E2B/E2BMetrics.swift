#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import Foundation
import Hummingbird
import HummingbirdCore
import ServiceLifecycle

/// One host-side sample of a sandbox's VMM: what E2B's `SandboxMetric` reports.
struct E2BMetricSample: Sendable {
    var time: Date
    var cpuCount: Int
    var cpuUsedPercent: Double
    var memoryUsed: Int64
    var memoryTotal: Int64
    var diskUsed: Int64
    var diskTotal: Int64

    var message: [String: Any] {
        [
            "timestamp": ProtoJSON.timestamp(time.timeIntervalSince1970), "timestampUnix": Int(time.timeIntervalSince1970),
            "cpuCount": cpuCount, "cpuUsedPct": cpuUsedPercent, "memUsed": memoryUsed, "memTotal": memoryTotal,
            "memCache": 0, "diskUsed": diskUsed, "diskTotal": diskTotal,
        ]
    }
}

/// The samples kept per sandbox (an hour at one each 5 s), and the CPU time each VMM had at its
/// last sample, so a sample's CPU share is over its own interval.
actor E2BMetricsHistory {
    static let kept = 720
    private var samples: [String: [E2BMetricSample]] = [:]
    private var lastTicks: [String: (time: Date, ticks: Double)] = [:]

    func append(_ sample: E2BMetricSample, for sandbox: String) {
        var list = samples[sandbox, default: []]
        list.append(sample)
        if list.count > Self.kept { list.removeFirst(list.count - Self.kept) }
        samples[sandbox] = list
    }

    func samples(of sandbox: String) -> [E2BMetricSample] { samples[sandbox] ?? [] }

    /// The CPU share since the previous call for `sandbox` (or since `started` the first time).
    func cpuShare(of sandbox: String, ticks: Double, now: Date, started: Date, cpus: Int) -> Double {
        let previous = lastTicks[sandbox] ?? (started, 0)
        lastTicks[sandbox] = (now, ticks)
        let seconds = max(now.timeIntervalSince(previous.time), 0.001)
        let used = max(ticks - previous.ticks, 0) / Double(sysconf(Int32(_SC_CLK_TCK)))
        return min(100 * used / seconds / Double(max(cpus, 1)), 100)
    }

    /// Forgets sandboxes not in `live`.
    func keep(only live: Set<String>) {
        samples = samples.filter { live.contains($0.key) }
        lastTicks = lastTicks.filter { live.contains($0.key) }
    }
}

/// Samples every running E2B sandbox every 5 s for as long as the daemon runs.
struct E2BMetricsSampler: Service {
    let service: E2BService
    static let interval: Duration = .seconds(5)

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                // Only E2B's sandboxes, each read on its own: a whole listing would reconcile the
                // store (roll back operations, clean up the dead) every 5 s, which is not a sampler's job.
                var live: Set<String> = []
                for state in service.states.all() {
                    guard let record = try? await service.engine.sandboxes.get(id: state.sandboxID) else { continue }
                    live.insert(record.id)
                    if record.state == .running { await service.metricsHistory.append(await service.sample(record), for: record.id) }
                }
                await service.metricsHistory.keep(only: live)
                try? await Task.sleep(for: Self.interval)
            }
        }
    }
}

extension E2BService {
    /// A sample of the VMM now, from the host: its CPU share since its last sample, its private
    /// (anonymous) memory, and the size of the sandbox's disk overlay.
    func sample(_ record: SandboxRecord, now: Date = Date()) async -> E2BMetricSample {
        var memoryUsed: Int64 = 0
        var cpuPercent = 0.0
        if let pid = record.pid, record.state == .running {
            if let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                let line = status.split(separator: "\n").first(where: { $0.hasPrefix("RssAnon:") }),
                let kib = Int64(line.split(separator: " ").dropFirst().first ?? "") {
                memoryUsed = kib * 1024
            }
            if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") {
                let fields = stat[stat.index(after: close)...].split(separator: " ")
                let ticks = (Double(fields.count > 12 ? fields[11] : "0") ?? 0) + (Double(fields.count > 12 ? fields[12] : "0") ?? 0)
                cpuPercent = await metricsHistory.cpuShare(of: record.id, ticks: ticks, now: now, started: record.createdAt, cpus: record.cpus)
            }
        }
        let disk = engine.home.sandboxes.appendingPathComponent(record.id).appendingPathComponent(record.activeDisk ?? "disk.qcow2")
        let diskUsed = (try? FileManager.default.attributesOfItem(atPath: disk.path)[.size] as? Int64) ?? 0
        return E2BMetricSample(
            time: now, cpuCount: record.cpus, cpuUsedPercent: cpuPercent, memoryUsed: memoryUsed, memoryTotal: Int64(record.memoryMiB) << 20,
            diskUsed: diskUsed, diskTotal: Int64(diskSizeMiB(record)) << 20)
    }

    /// `GET /sandboxes/{id}/metrics`: the samples kept, within `start`..`end` (Unix seconds) when
    /// given, plus one taken now when now is in range, so a sandbox younger than one sampling
    /// interval has its metrics too.
    func metrics(_ record: SandboxRecord, query: FlatDictionary<Substring, Substring>) async throws -> [[String: Any]] {
        func bound(_ name: String) throws -> Date? {
            guard let text = query.get(name) else { return nil }
            guard let seconds = Int(String(text)) else { throw E2BError(400, "'\(name)' is a Unix time in seconds (got \(text))") }
            return Date(timeIntervalSince1970: Double(seconds))
        }
        let start = try bound("start"), end = try bound("end")
        // Bounds are whole seconds: `end` covers the second it names.
        func inRange(_ time: Date) -> Bool {
            (start.map { time >= $0 } ?? true) && (end.map { time < $0.addingTimeInterval(1) } ?? true)
        }
        var samples = await metricsHistory.samples(of: record.id).filter { inRange($0.time) }
        let now = Date()
        if record.state == .running, inRange(now) { samples.append(await sample(record, now: now)) }
        return samples.map(\.message)
    }
}
