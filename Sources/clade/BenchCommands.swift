import ArgumentParser
import CladeBench
import CladeEngine
import Foundation

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Benchmarks, each measured against baselines in the same run.", subcommands: [ForkBench.self, BranchBench.self, PackBench.self, PullBench.self])

    struct ForkBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "fork", abstract: "Cold boot vs fork vs full-copy fork vs a bare QEMU start; with --run, time to a workload's first result.",
            discussion: "With --run CMD: N children of --image by cold boot (boot, then CMD) against N forks of a snapshot baked after --warm (then CMD); with --eval CODE --interpreter python3 [--preload P], also N forks that evaluate CODE in the snapshot's resident interpreter.")
        @OptionGroup var global: GlobalOptions
        @Option(name: .short, help: "Children per approach.") var n = 8
        @Option(help: "Guest memory, MiB.") var memory = 256
        @Option(help: "With --run: the image to boot and bake.") var image = "default"
        @Option(help: "With --run: shell command run before the snapshot is taken.") var warm: String?
        @Option(name: .customLong("run"), help: "Shell command each child runs; switches to the workload benchmark.") var workload: String?
        @Option(help: "With --run: code each child of a third arm evaluates in the resident interpreter.") var eval: String?
        @Option(help: "With --eval: the Python 3 executable left running in the snapshot.") var interpreter: String?
        @Option(help: "With --eval: code the interpreter runs before the snapshot (e.g. 'import numpy').") var preload: String?
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let progress = ProgressReporter(quiet: json)
            if let workload {
                let report = try await global.makeEngine().benchWorkload(
                    image: image, warm: warm, run: workload, count: n, memoryMiB: memory, eval: eval, interpreter: interpreter, preload: preload
                ) { progress.update($0) }
                progress.finish()
                if json { return try printJSON(report) }
                print("bench fork: N=\(report.count) children of \(report.image) (\(report.memoryMiB) MiB) running: \(report.run)")
                print(String(format: "  cold boot then run   %8.0f ms   ok %d/%d", report.coldBootMilliseconds, report.coldBootSucceeded, report.count))
                print(String(format: "  fork warmed then run %8.0f ms   ok %d/%d", report.forkMilliseconds, report.forkSucceeded, report.count))
                if let evalMilliseconds = report.forkEvalMilliseconds {
                    print(String(format: "  fork warmed then eval %7.0f ms   ok %d/%d", evalMilliseconds, report.forkEvalSucceeded ?? 0, report.count))
                }
                for (name, value) in report.ratios.sorted(by: { $0.key < $1.key }) {
                    print(String(format: "  %-20@ %8.2f", name as NSString, value))
                }
                print("  sample output: \(report.sampleOutput.trimmingCharacters(in: .whitespacesAndNewlines))")
                if let result = report.sampleEvalResult { print("  sample eval result: \(result.trimmingCharacters(in: .whitespacesAndNewlines))") }
                return
            }
            let report = try await global.makeEngine().benchFork(count: n, memoryMiB: memory) { progress.update($0) }
            progress.finish()
            if json { return try printJSON(report) }
            print("bench fork: N=\(report.count), \(report.memoryMiB) MiB guests, \(report.accelerator)")
            for figure in report.figures {
                let copied = figure.memoryBytesCopiedPerChild.map { " memory copied/child: \($0) B" } ?? ""
                print(String(format: "  %-16@ total %8.0f ms   per child %7.0f ms   ok %d/%d", figure.name as NSString, figure.totalMilliseconds, figure.perChildMilliseconds, figure.succeeded, report.count) + copied)
            }
            let idle = report.idlePrivateGuestRAMBytes.map { String(format: "%.1f MiB", Double($0) / 1_048_576) }.joined(separator: ", ")
            print("  idle fork private guest RAM: \(idle)")
            if let blocks = report.translatedBlocksPerFork { print("  guest code blocks translated per fork: \(blocks.map(String.init).joined(separator: ", "))") }
            for (name, value) in report.ratios.sorted(by: { $0.key < $1.key }) {
                print(String(format: "  %-42@ %.2f", name as NSString, value))
            }
        }
    }

    struct BranchBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "branch", abstract: "Full vs diff branch of an idle and a 10%-dirty fork; live vs diff vs full of forks 10% and 50% dirty that keep writing; standby+resume.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Guest memory, MiB.") var memory = 512
        @Option(help: "Branches of each mode per dirty level, for the percentiles.") var rounds = 3
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let progress = ProgressReporter(quiet: json)
            guard (1...50).contains(rounds) else { throw ValidationError("--rounds must be between 1 and 50") }
            let report = try await global.makeEngine().benchBranch(memoryMiB: memory, rounds: rounds) { progress.update($0) }
            progress.finish()
            if json { return try printJSON(report) }
            print("bench branch: \(report.memoryMiB) MiB guest, dirtied \(report.dirtiedMiB) MiB")
            for (name, branch) in report.branches.sorted(by: { $0.key < $1.key }) {
                print(String(format: "  %-12@ pause %7.1f ms   total %7.0f ms   pages %6d   bytes %lld", name as NSString, branch.pauseMilliseconds, branch.totalMilliseconds, branch.pagesCaptured, branch.bytesWritten))
            }
            for (name, arm) in report.busy.sorted(by: { $0.key < $1.key }) {
                print(String(format: "  %-12@ pause p50 %7.1f ms  p90 %7.1f ms   total p50 %7.0f ms   (%d rounds)", name as NSString, arm.pauseP50Milliseconds, arm.pauseP90Milliseconds, arm.totalP50Milliseconds, arm.rounds))
            }
            print(String(format: "  standby %.0f ms, resume %.0f ms", report.standbyMilliseconds, report.resumeMilliseconds))
            for (name, value) in report.ratios.sorted(by: { $0.key < $1.key }) {
                print(String(format: "  %-32@ %.3f", name as NSString, value))
            }
        }
    }

    struct PackBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "pack", abstract: "Pack and unpack of a baked snapshot vs tar + zstd -3 -T0, memory compression, and a sibling branch's new bytes.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Guest memory, MiB.") var memory = 256
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let progress = ProgressReporter(quiet: json)
            let report = try await global.makeEngine().benchPack(memoryMiB: memory) { progress.update($0) }
            progress.finish()
            if json { return try printJSON(report) }
            print("bench pack: \(report.memoryMiB) MiB guest")
            print(String(format: "  clade pack      %7.2f s  %@", report.packSeconds, formatBytes(report.packBytes) as NSString))
            print(String(format: "  tar+zstd -3     %7.2f s  %@", report.tarSeconds, formatBytes(report.tarBytes) as NSString))
            print(String(format: "  clade unpack    %7.2f s", report.unpackSeconds))
            print(String(format: "  tar -x zstd     %7.2f s", report.untarSeconds))
            print("  sibling branch adds \(formatBytes(report.branchNewBytes))")
            for (name, value) in report.ratios.sorted(by: { $0.key < $1.key }) {
                print(String(format: "  %-52@ %.3f", name as NSString, value))
            }
        }
    }

    struct PullBench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pull",
            abstract: "Children on a host without the snapshot: pull then fork vs lazy fork vs lazy fork with the working set prefetched, against one registry.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Registry HOST:PORT to push to and pull from (e.g. a docker-registry behind a throttle).") var registry: String
        @Flag(help: "Plain HTTP to the registry.") var insecure = false
        @Option(name: .short, help: "Children per arm.") var n = 4
        @Option(help: "Guest memory of the snapshot baked for it, MiB.") var memory = 256
        @Option(help: "Use this snapshot instead of baking one (its working set is recorded anew).") var tag: String?
        @Option(help: "Code each child then evaluates in the snapshot's resident interpreter (a snapshot baked with --interpreter).") var eval: String?
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let progress = ProgressReporter(quiet: json)
            let report = try await global.makeEngine().benchPull(registry: registry, insecure: insecure, count: n, memoryMiB: memory, tag: tag, eval: eval) { progress.update($0) }
            progress.finish()
            if json { return try printJSON(report) }
            print("bench pull: \(report.children) children of a \(report.memoryMiB) MiB snapshot from \(report.registry); working set \(report.workingSetChunks) chunks")
            for name in ["pull_then_fork", "lazy", "lazy_prefetch"] {
                guard let arm = report.arms[name] else { continue }
                print(String(format: "  %@ pull %6.2f s   first answer %6.2f s   all %6.2f s   %@ before the first answer%@", name.padding(toLength: 15, withPad: " ", startingAt: 0) as NSString, arm.pullSeconds, arm.firstAnswerSeconds, arm.allAnswersSeconds,
                    formatBytes(arm.bytesBeforeFirstAnswer) as NSString, ((arm.demandFetches.map { ", \($0) chunks waited on" } ?? "") + (arm.rootfsDemandFetches.map { ", \($0) rootfs chunks read on demand" } ?? "")) as NSString))
                if let firstEval = arm.firstEvalSeconds, let allEvals = arm.allEvalsSeconds {
                    print(String(format: "  %@                 first eval   %6.2f s   all %6.2f s", "".padding(toLength: 15, withPad: " ", startingAt: 0) as NSString, firstEval, allEvals))
                }
            }
            for (name, value) in report.ratios.sorted(by: { $0.key < $1.key }) {
                print(String(format: "  %@ %.3f", name.padding(toLength: 72, withPad: " ", startingAt: 0) as NSString, value))
            }
        }
    }
}
