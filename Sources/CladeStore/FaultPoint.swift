#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Deterministic crash points for fault tests: with `CLADE_FAULT=<point>` set, clade exits at
/// once with status 137 (as if SIGKILLed) when it reaches that point. The points are listed in
/// the README's section on crash safety.
public enum FaultPoint {
    public static func crashIfRequested(at point: String) {
        guard ProcessInfo.processInfo.environment["CLADE_FAULT"] == point else { return }
        _exit(137)
    }
}
