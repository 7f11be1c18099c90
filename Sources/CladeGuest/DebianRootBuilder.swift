import CladeStore
import Foundation
import Logging

/// A Debian root filesystem as a tarball, made by mmdebstrap from a Debian mirror, with an
/// unprivileged `user` (uid 1000, `/home/user`, bash). `SOURCE_DATE_EPOCH` is fixed and the
/// files that record when they were made (dpkg and apt logs, ldconfig's cache) are dropped,
/// so two builds against the same mirror state give the same root; the mirror moving on
/// (new package versions) is what changes it.
public struct DebianRootBuilder: Sendable {
    public static let defaultSourceDateEpoch = 1_700_000_000
    /// The account every Debian image has, as E2B-style SDKs assume.
    public static let userName = "user"
    public static let userID = 1000

    public var suite: String
    public var packages: [String]
    public var mirror: String
    public var sourceDateEpoch: Int
    private let logger: Logger

    public init(suite: String, packages: [String], mirror: String? = nil, sourceDateEpoch: Int = Self.defaultSourceDateEpoch, logger: Logger = Logger(label: "clade.debian")) {
        self.suite = suite
        self.packages = packages
        self.mirror = mirror ?? Self.hostMirror() ?? "http://deb.debian.org/debian"
        self.sourceDateEpoch = sourceDateEpoch
        self.logger = logger
    }

    /// Checks names before they reach a command line.
    public func validate() throws {
        let suiteOK = !suite.isEmpty && suite.allSatisfy { $0.isLetter || $0.isNumber || "-".contains($0) } && suite.first?.isLetter == true
        guard suiteOK else { throw GuestError.unsupportedPath(suite, reason: "a Debian suite is a name like bookworm or trixie") }
        for package in packages {
            let ok = !package.isEmpty && package.first.map { $0.isLetter || $0.isNumber } == true
                && package.allSatisfy { $0.isLowercase || $0.isNumber || "+-.:=~".contains($0) }
            guard ok else { throw GuestError.unsupportedPath(package, reason: "not a Debian package name (lowercase letters, digits, + - . and =VERSION)") }
        }
        guard mirror.hasPrefix("http://") || mirror.hasPrefix("https://") || mirror.hasPrefix("file:/") else {
            throw GuestError.unsupportedPath(mirror, reason: "a mirror is an http(s):// or file:/ URL")
        }
    }

    /// The package list mmdebstrap installs: the request plus what the user account needs.
    public var includedPackages: [String] {
        var result = ["bash", "passwd", "ca-certificates"]
        for package in packages where !result.contains(package) { result.append(package) }
        return result
    }

    /// Writes the root as a tar file at `output`.
    public func build(to output: URL) throws {
        try validate()
        guard ExternalCommand.locate("mmdebstrap") != nil else { throw GuestError.toolMissing("mmdebstrap (apt-get install mmdebstrap)") }
        let user = Self.userName
        var hooks: [String] = []
        if includedPackages.contains("sudo") {
            // `user` has no password, so sudo is only usable without one, as E2B's images give it.
            hooks.append("--customize-hook=printf '\(user) ALL=(ALL:ALL) NOPASSWD: ALL\\n' > \"$1\"/etc/sudoers.d/\(user) && chmod 0440 \"$1\"/etc/sudoers.d/\(user)")
        }
        let arguments = [
            "--quiet", "--variant=minbase", "--include=\(includedPackages.joined(separator: ","))",
            "--customize-hook=chroot \"$1\" useradd --create-home --uid \(Self.userID) --user-group --shell /bin/bash \(user)",
            "--customize-hook=rm -f \"$1\"/var/log/dpkg.log \"$1\"/var/log/alternatives.log \"$1\"/var/log/apt/*.log \"$1\"/var/log/apt/eipp.log.xz \"$1\"/var/cache/ldconfig/aux-cache \"$1\"/etc/machine-id \"$1\"/var/lib/dbus/machine-id",
            "--customize-hook=printf 'clade\\n' > \"$1\"/etc/hostname",
        ] + hooks + [
            suite, output.path, mirror,
        ]
        logger.info("building a Debian root", metadata: ["suite": "\(suite)", "mirror": "\(mirror)", "packages": "\(includedPackages.joined(separator: ","))"])
        var environment = ProcessInfo.processInfo.environment
        environment["SOURCE_DATE_EPOCH"] = "\(sourceDateEpoch)"
        let result = try ExternalCommand("mmdebstrap", arguments, environment: environment).run()
        guard result.status == 0 else {
            let tail = result.stderr.split(separator: "\n").suffix(8).joined(separator: "\n")
            throw StoreError.commandFailed(command: "mmdebstrap \(suite) from \(mirror)", status: result.status, output: tail + "\ncheck the suite, the package names and that the mirror is reachable")
        }
    }

    /// The first Debian mirror in the host's apt sources (deb822 `.sources` or `sources.list`).
    public static func hostMirror(root: String = "/etc/apt") -> String? {
        var files = ["\(root)/sources.list.d/debian.sources"]
        let directory = "\(root)/sources.list.d"
        files += ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted().filter { $0.hasSuffix(".sources") || $0.hasSuffix(".list") }
            .map { "\(directory)/\($0)" }
        files.append("\(root)/sources.list")
        for file in files {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) {
                if line.hasPrefix("URIs:") {
                    let uri = line.dropFirst(5).trimmingCharacters(in: .whitespaces).split(separator: " ").first.map(String.init)
                    if let uri, uri.contains("/debian"), !uri.contains("security") { return uri }
                } else if line.hasPrefix("deb ") {
                    let uri = line.split(separator: " ").dropFirst().first { !$0.hasPrefix("[") }.map(String.init)
                    if let uri, uri.contains("/debian"), !uri.contains("security") { return uri }
                }
            }
        }
        return nil
    }
}
