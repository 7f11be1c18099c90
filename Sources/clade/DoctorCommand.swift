import ArgumentParser
import CladeEngine
import Foundation

struct Doctor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "doctor", abstract: "Check every prerequisite and print the fix for each problem.")

    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print the checks as JSON.") var json = false

    func run() async throws {
        let engine = await global.makeEngine()
        let progress = ProgressReporter(quiet: json)
        progress.update("probing the host (boots a test guest under KVM if /dev/kvm exists)")
        let checks = await engine.doctor()
        progress.finish()
        if json {
            try printJSON(checks)
        } else {
            for check in checks {
                let mark = check.status == .ok ? "ok  " : check.status == .warning ? "warn" : "FAIL"
                print("[\(mark)] \(check.name): \(check.detail)")
                if let fix = check.fix { print("       fix: \(fix)") }
            }
        }
        if checks.contains(where: { $0.status == .error }) { throw ExitCode(1) }
    }
}
