import CladeEngine
import CladeModel
import Foundation

/// `clade bench fork --image X --warm W --run R`: time to the first result of R in N
/// children, by cold boot (boot, then run R) and by fork of a snapshot baked after W; with
/// `--eval E --interpreter I`, also by fork + `eval E` in the snapshot's resident interpreter.
public struct WorkloadBenchReport: Codable, Sendable {
    public var image: String
    public var count: Int
    public var memoryMiB: Int
    public var warm: String?
    public var run: String
    /// Wall time from the start until every child had printed its result.
    public var coldBootMilliseconds: Double
    public var forkMilliseconds: Double
    /// Children whose command exited 0, by approach.
    public var coldBootSucceeded: Int
    public var forkSucceeded: Int
    /// The resident-interpreter arm, when asked for.
    public var eval: String?
    public var forkEvalMilliseconds: Double?
    public var forkEvalSucceeded: Int?
    public var sampleEvalResult: String?
    /// The first child's output, for a look at what was measured.
    public var sampleOutput: String
    public var ratios: [String: Double]

    enum CodingKeys: String, CodingKey {
        case image, count, warm, run, ratios
        case memoryMiB = "memory_mib"
        case coldBootMilliseconds = "cold_boot_ms"
        case forkMilliseconds = "fork_ms"
        case coldBootSucceeded = "cold_boot_succeeded"
        case forkSucceeded = "fork_succeeded"
        case sampleOutput = "sample_output"
        case eval
        case forkEvalMilliseconds = "fork_eval_ms"
        case forkEvalSucceeded = "fork_eval_succeeded"
        case sampleEvalResult = "sample_eval_result"
    }
}

extension Engine {
    public func benchWorkload(
        image: String, warm: String?, run: String, count: Int, memoryMiB: Int, eval: String? = nil, interpreter: String? = nil,
        preload: String? = nil, progress: @Sendable (String) -> Void = { _ in }
    ) async throws -> WorkloadBenchReport {
        if eval != nil && interpreter == nil { throw EngineError.badInput("--eval runs in a resident interpreter; name it with --interpreter (e.g. python3)") }
        guard (1...Self.maxForkCount).contains(count) else { throw EngineError.badInput("-n must be between 1 and \(Self.maxForkCount) (got \(count))") }
        _ = try images.named(image, progress: progress)
        let boot = BootOptions(image: image, memoryMiB: memoryMiB)

        progress("cold boot: \(count) VMs of \(image), each then runs the command")
        let coldStart = Date()
        let cold = await runInChildren(count: count, run: run) { _ in try await self.sandboxes.boot(boot).id }
        let coldMilliseconds = Date().timeIntervalSince(coldStart) * 1000

        let tag = "bench-\(Names.newSandboxID())"
        progress("baking \(tag) from \(image)\(warm.map { " after: \($0)" } ?? "") (not timed)")
        _ = try await snapshots.bake(BakeOptions(boot: boot, tag: tag, warm: warm, interpreter: eval == nil ? nil : interpreter, preload: preload))
        defer { Task { _ = try? await self.snapshots.remove(tag, cascade: true) } }
        let metadata = try snapshotCatalog.require(tag)

        progress("fork: \(count) children of the warmed snapshot, each runs the command")
        let forkStart = Date()
        let forked = await runInChildren(count: count, run: run) { _ in
            try await self.forks.startChild(of: metadata, id: Names.newSandboxID(), port: nil, mac: nil).0.id
        }
        let forkMilliseconds = Date().timeIntervalSince(forkStart) * 1000
        var report = WorkloadBenchReport(
            image: image, count: count, memoryMiB: memoryMiB, warm: warm, run: run,
            coldBootMilliseconds: coldMilliseconds, forkMilliseconds: forkMilliseconds,
            coldBootSucceeded: cold.succeeded, forkSucceeded: forked.succeeded, sampleOutput: forked.sample ?? cold.sample ?? "",
            ratios: ["cold_boot/fork": coldMilliseconds / forkMilliseconds])

        if let eval {
            progress("fork + eval: \(count) children of the warmed snapshot, each evaluates in its resident interpreter")
            let evalStart = Date()
            let evaluated = await runInChildren(count: count, run: run, evaluate: eval) { _ in
                try await self.forks.startChild(of: metadata, id: Names.newSandboxID(), port: nil, mac: nil).0.id
            }
            let evalMilliseconds = Date().timeIntervalSince(evalStart) * 1000
            report.eval = eval
            report.forkEvalMilliseconds = evalMilliseconds
            report.forkEvalSucceeded = evaluated.succeeded
            report.sampleEvalResult = evaluated.sample
            report.ratios["cold_boot/fork_eval"] = coldMilliseconds / evalMilliseconds
            report.ratios["fork/fork_eval"] = forkMilliseconds / evalMilliseconds
        }
        _ = try? await snapshots.remove(tag, cascade: true)
        return report
    }

    /// Starts `count` sandboxes in parallel with `start`, runs `run` in each as soon as it is up,
    /// and kills them all once every result is in.
    /// With `evaluate`, each child evaluates that code in its resident interpreter instead of running `run`.
    private func runInChildren(
        count: Int, run: String, evaluate: String? = nil, start: @escaping @Sendable (Int) async throws -> String
    ) async -> (succeeded: Int, sample: String?) {
        let results = await withTaskGroup(of: (String?, Int32?, String).self) { group in
            for index in 0..<count {
                group.addTask {
                    guard let id = try? await start(index) else { return (nil, nil, "") }
                    if let evaluate {
                        let answer = try? await self.processes.eval(id: id, code: evaluate)
                        return (id, answer?.exitCode, answer.map { $0.stdout + ($0.result ?? "") } ?? "")
                    }
                    let reply = try? await self.sandboxes.exec(id: id, argv: ["sh", "-c", run], timeout: 600)
                    return (id, reply?.exitCode, reply?.stdout ?? "")
                }
            }
            var collected: [(String?, Int32?, String)] = []
            for await result in group { collected.append(result) }
            return collected
        }
        for id in results.compactMap(\.0) { try? await sandboxes.kill(id: id) }
        let succeeded = results.filter { $0.1 == 0 }
        return (succeeded.count, succeeded.first?.2)
    }
}
