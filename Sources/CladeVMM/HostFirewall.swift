#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladeStore
import Foundation
import Logging

/// Keeps guests off the host with the host's own packet filter (iptables, IPv4 and IPv6).
///
/// User-mode networking opens the guest's connections as ordinary sockets of the VMM process, so
/// every packet a guest sends to the world leaves the host as the VMM's uid. Each sandbox's VMM
/// runs as a uid of its own from ``JailIdentityPool``, and one chain, `CLADE-VMM`, hooked into
/// `OUTPUT` for that uid range, decides:
/// 1. replies on connections the host opened (the agent, published ports) pass;
/// 2. any address of the host itself (loopback, its interfaces) and link-local addresses (cloud
///    metadata services) are refused, whatever the sandbox's policy;
/// 3. a sandbox with an allow-list jumps to a chain of its own (`CLADE-<uid>`) that returns for the
///    listed destinations and refuses the rest.
public struct HostFirewall: Sendable {
    public static let chain = "CLADE-VMM"
    private let logger: Logger
    private let lockFile: URL

    public init(logger: Logger = Logger(label: "clade.firewall"), lockFile: URL = URL(fileURLWithPath: "/run/clade/firewall.lock")) {
        self.logger = logger
        self.lockFile = lockFile
    }

    /// True when this process can install rules: root, with iptables and ip6tables present.
    public static var isAvailable: Bool {
        geteuid() == 0 && ExternalCommand.locate("iptables") != nil && ExternalCommand.locate("ip6tables") != nil
    }

    private static let prepared = Locked(false)

    /// Installs the shared chain and its `OUTPUT` hook once per host (idempotent; cached per process).
    public func prepare() throws {
        if Self.prepared.current { return }
        let hook = Self.outputHook
        // The hook jumps to the chain, so where the hook is, the chain is. Both tools' hooks and
        // the address-translation guard in place is the common case, checked side by side (each
        // check is a ~5 ms process).
        let checks = [["iptables", "-w", "-C", "OUTPUT"] + hook, ["ip6tables", "-w", "-C", "OUTPUT"] + hook, ["iptables", "-w", "-t", "nat", "-C", "OUTPUT"] + Self.translationGuard]
        if Self.succeed(checks).allSatisfy({ $0 }) {
            Self.prepared.withLock { $0 = true }
            return
        }
        try withHostLock {
            try guardAgainstTranslation()
            for tool in ["iptables", "ip6tables"] {
                if try ExternalCommand(tool, ["-w", "-C", "OUTPUT"] + hook).run().status == 0 { continue }
                if try ExternalCommand(tool, ["-w", "-S", Self.chain]).run().status != 0 {
                    let linkLocal = tool == "iptables" ? "169.254.0.0/16" : "fe80::/10"
                    let rules = [
                        "*filter",
                        ":\(Self.chain) - [0:0]",
                        "-A \(Self.chain) -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
                    ] + Self.refuse(chain: Self.chain, match: "-m addrtype --dst-type LOCAL")
                        + Self.refuse(chain: Self.chain, match: "-d \(linkLocal)") + ["COMMIT", ""]
                    try restore(tool, rules.joined(separator: "\n"))
                }
                try run(tool, ["-w", "-I", "OUTPUT", "1"] + hook)
            }
        }
        Self.prepared.withLock { $0 = true }
        logger.debug("host firewall ready", metadata: ["chain": "\(Self.chain)"])
    }

    /// The `nat` `OUTPUT` rule, first in that chain, that keeps a jailed VMM's connections to the
    /// host's own addresses untranslated: a DNAT of other software's (Docker publishing a port on
    /// the host's addresses, kube-proxy's node ports) would otherwise turn one into a connection
    /// to a container or pod address, which the filter's refusal of host addresses no longer sees.
    static var translationGuard: [String] {
        ["-m", "owner", "--uid-owner", "\(JailIdentityPool.uidRange.lowerBound)-\(JailIdentityPool.uidRange.upperBound)",
         "-m", "addrtype", "--dst-type", "LOCAL", "-j", "RETURN"]
    }

    /// Installs ``translationGuard`` for IPv4 and, where the kernel has an IPv6 `nat` table (without
    /// one, nothing can translate IPv6 either), for IPv6. Call it holding the host lock.
    private func guardAgainstTranslation() throws {
        for tool in ["iptables", "ip6tables"] {
            let present = try ExternalCommand(tool, ["-w", "-t", "nat", "-C", "OUTPUT"] + Self.translationGuard).run().status == 0
            if present { continue }
            if tool == "ip6tables", try ExternalCommand(tool, ["-w", "-t", "nat", "-S", "OUTPUT"]).run().status != 0 { continue }
            try run(tool, ["-w", "-t", "nat", "-I", "OUTPUT", "1"] + Self.translationGuard)
        }
    }

    /// The `OUTPUT` rule that sends every jailed VMM's packets to the shared chain.
    static var outputHook: [String] {
        ["-m", "owner", "--uid-owner", "\(JailIdentityPool.uidRange.lowerBound)-\(JailIdentityPool.uidRange.upperBound)", "-j", chain]
    }

    /// Runs `commands` (each a tool and its arguments) side by side, as iptables-nft does not
    /// serialise them and each is a ~5 ms process start, and tells which exited 0, in order.
    static func succeed(_ commands: [[String]]) -> [Bool] {
        let results = Locked([Bool](repeating: false, count: commands.count))
        DispatchQueue.concurrentPerform(iterations: commands.count) { index in
            let command = commands[index]
            let result = (try? ExternalCommand(command[0], Array(command.dropFirst())).run().status) == 0
            results.withLock { $0[index] = result }
        }
        return results.current
    }

    /// Applies `policy` to the VMM running as `uid`. `outbound` needs nothing beyond the shared
    /// chain; `none` is refused here too, in case the VMM's own switch is not honored. With
    /// `replacing`, whatever the uid had is dropped first (a restart, or a uid taken over from
    /// an abandoned claim); a fresh uid has nothing, which spares a fork two `iptables -S` runs.
    /// A policy that names hosts has its HTTP and TLS connections sent to the egress proxy on
    /// `egressProxyPort`; without one they meet the address rules alone, which refuse them.
    public func apply(_ policy: NetworkPolicy, uid: UInt32, replacing: Bool, egressProxyPort: Int? = nil) throws {
        try prepare()
        if replacing { remove(uid: uid) }
        // Plain `outbound` needs nothing; with transforms it still needs the redirect to the proxy.
        guard policy.mode != .outbound || policy.usesEgressProxy else { return }
        let nameservers = policy.usesEgressProxy ? Self.nameservers() : []
        try withHostLock {
            for tool in ["iptables", "ip6tables"] {
                try restore(tool, Self.sandboxRules(policy, uid: uid, tool: tool, hook: true, nameservers: nameservers))
            }
            try redirectNames(of: policy, uid: uid, to: egressProxyPort)
        }
    }

    /// Changes the policy of the running VMM of `uid` in one transaction per tool: its chain is
    /// emptied and refilled by one `iptables-restore`, so no packet meets a chain half-written or
    /// missing (which `remove` then `apply` would allow).
    /// The redirect to the egress proxy is replaced after the address rules: in between, HTTP and
    /// TLS meet the address rules alone, which admit less than the names would.
    public func update(_ policy: NetworkPolicy, uid: UInt32, egressProxyPort: Int? = nil) throws {
        try prepare()
        let nameservers = policy.usesEgressProxy ? Self.nameservers() : []
        try withHostLock {
            for tool in ["iptables", "ip6tables"] {
                let hooked = try ExternalCommand(tool, ["-w", "-C", Self.chain] + Self.hook(uid)).run().status == 0
                try restore(tool, Self.sandboxRules(policy, uid: uid, tool: tool, hook: !hooked, nameservers: nameservers))
            }
            // Most sandboxes never had a redirect: one probe spares them the removal's four runs.
            if Self.succeed([["iptables", "-w", "-t", "nat", "-S", Self.sandboxChain(uid)]]) == [true] { removeRedirect(uid: uid) }
            try redirectNames(of: policy, uid: uid, to: egressProxyPort)
        }
    }

    /// The `iptables-restore --noflush` input that (re)fills `uid`'s own chain with `policy`, and
    /// with `hook` also sends the uid's packets there. Declaring a chain in such an input empties
    /// it within the same commit, so a chain being refilled is never seen half-written.
    static func sandboxRules(_ policy: NetworkPolicy, uid: UInt32, tool: String, hook: Bool, nameservers: [String] = []) -> String {
        let own = sandboxChain(uid)
        let rules = ["*filter", ":\(own) - [0:0]"]
            + PolicyRules.rules(for: policy, chain: own, pass: "RETURN", ipv6: tool == "ip6tables", nameservers: nameservers)
            + (hook ? ["-A \(chain) " + Self.hook(uid).joined(separator: " ")] : []) + ["COMMIT", ""]
        return rules.joined(separator: "\n")
    }

    /// The match and jump that send `uid`'s packets to its own chain.
    static func hook(_ uid: UInt32) -> [String] { ["-m", "owner", "--uid-owner", "\(uid)", "-j", sandboxChain(uid)] }

    /// Drops whatever `uid` had (nothing is an error: it may never have had a chain).
    public func remove(uid: UInt32) {
        let own = Self.sandboxChain(uid)
        try? withHostLock {
            // The address chains (both tools) and the redirect's chain are looked for side by side.
            let present = Self.succeed([["iptables", "-w", "-S", own], ["ip6tables", "-w", "-S", own], ["iptables", "-w", "-t", "nat", "-S", own]])
            if present[2] { removeRedirect(uid: uid) }
            for (tool, chainPresent) in zip(["iptables", "ip6tables"], present) {
                guard chainPresent else { continue }
                while (try? ExternalCommand(tool, ["-w", "-D", Self.chain] + Self.hook(uid)).run().status) == 0 {}
                _ = try? ExternalCommand(tool, ["-w", "-F", own]).run()
                _ = try? ExternalCommand(tool, ["-w", "-X", own]).run()
            }
        }
    }

    /// Refusals the guest sees at once: a TCP reset (slirp answers the guest's SYN with one), an
    /// ICMP unreachable for everything else.
    static func refuse(chain: String, match: String) -> [String] {
        let prefix = "-A \(chain)" + (match.isEmpty ? "" : " \(match)")
        return ["\(prefix) -p tcp -j REJECT --reject-with tcp-reset", "\(prefix) -j REJECT"]
    }

    static func sandboxChain(_ uid: UInt32) -> String { "CLADE-\(uid)" }

    func restore(_ tool: String, _ rules: String) throws {
        let output = try ExternalCommand("\(tool)-restore", ["-w", "--noflush"]).run(stdin: Data(rules.utf8))
        guard output.status == 0 else {
            throw VMMError.confinementFailed(
                what: "install \(tool) rules", reason: output.stderr.trimmingCharacters(in: .whitespacesAndNewlines),
                fix: "check that the host kernel has the conntrack, addrtype and owner matches (modprobe xt_owner xt_addrtype xt_conntrack)")
        }
    }

    private func run(_ tool: String, _ arguments: [String]) throws {
        let output = try ExternalCommand(tool, arguments).run()
        guard output.status == 0 else {
            throw VMMError.confinementFailed(
                what: "run \(tool) \(arguments.joined(separator: " "))", reason: output.stderr.trimmingCharacters(in: .whitespacesAndNewlines),
                fix: "check the host's iptables (clade doctor)")
        }
    }

    /// Serializes rule changes of every clade process on the host.
    func withHostLock<R>(_ body: () throws -> R) throws -> R {
        try FileManager.default.createDirectory(at: lockFile.deletingLastPathComponent(), withIntermediateDirectories: true)
        let fd = open(lockFile.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError.systemCall("open", path: lockFile.path, errno: errno) }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw StoreError.systemCall("flock", path: lockFile.path, errno: errno) }
        }
        return try body()
    }
}
