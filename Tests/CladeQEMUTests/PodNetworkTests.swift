import CladeModel
@testable import CladeQEMU
@testable import CladeVMM
import Foundation
import Testing

/// A pod's network namespace as clade sets it up: the rules, the routes and the guest's command
/// (the namespace itself is exercised for real by `ContainerdCRITests`).
struct PodNetworkTests {
    let pod = PodNetwork(namespacePath: "/var/run/netns/cni-1", interface: "eth0", address: "10.244.1.7", prefixLength: 24, gateway: "10.244.1.1")

    @Test func theFilterDropsByDefaultAndPutsThePolicyOnTheGuestsOwnConnections() throws {
        let rules = pod.filterRules(try NetworkPolicy(parsing: "allow:10.96.0.0/12")).split(separator: "\n").map(String.init)
        #expect(rules.contains(":FORWARD DROP [0:0]"))
        // The agent's port is unreachable from the pod network, and it is checked before the pod's address is admitted.
        let agent = try #require(rules.firstIndex(of: "-A FORWARD -o clade0 -d 10.244.1.7/32 -p tcp --dport 8888 -j DROP"))
        let admitted = try #require(rules.firstIndex(of: "-A FORWARD -o clade0 -d 10.244.1.7/32 -j ACCEPT"))
        #expect(agent < admitted)
        // Only the pod's own address leaves the guest.
        #expect(rules.contains("-A FORWARD -i clade0 -s 10.244.1.7/32 -j CLADE-GUEST"))
        #expect(!rules.contains { $0.hasPrefix("-A FORWARD -i clade0 -j") })
        let chain = rules.filter { $0.hasPrefix("-A CLADE-GUEST") }
        #expect(chain.first == "-A CLADE-GUEST -d 169.254.0.0/16 -p tcp -j REJECT --reject-with tcp-reset")
        #expect(chain.contains("-A CLADE-GUEST -d 10.96.0.0/12 -j ACCEPT"))
        // An allow list refuses the rest before the chain's last word.
        let refusal = try #require(chain.firstIndex(of: "-A CLADE-GUEST -p tcp -j REJECT --reject-with tcp-reset"))
        #expect(refusal < chain.count - 1 && chain.last == "-A CLADE-GUEST -j ACCEPT")
    }

    @Test func theAddressMovesToARouteThroughTheTapAndTheRoutesComeBack() {
        #expect(pod.routingCommands().split(separator: "\n") == [
            "link set clade0 up",
            "address add 10.0.2.2/24 dev clade0",
            "address del 10.244.1.7/24 dev eth0",
            "route replace 10.244.1.0/24 dev eth0",
            "route replace default via 10.244.1.1 dev eth0",
            "route replace 10.244.1.7/32 dev clade0",
        ])
        #expect(PodNetwork.network("10.88.3.200", 16) == "10.88.0.0/16")
        #expect(PodNetwork.network("192.0.2.77", 32) == "192.0.2.77/32")
        #expect(pod.guestCommand == "$B ip address add 10.244.1.7/24 dev eth0 && $B ip route replace default via 10.244.1.1 dev eth0 src 10.244.1.7")
    }

    @Test func aPodNetworkMovesTheNICToTheTapAndLeavesUserModeNetworkingWithoutAWayOut() {
        var spec = QMPCodecTests.sampleSpec()
        let plain = QEMUCommandLine.deviceDrivers(for: spec)
        spec.guestNetworkDescriptor = 9
        let joined = QEMUCommandLine.arguments(for: spec).joined(separator: " ")
        #expect(joined.contains("-netdev user,id=net0,restrict=on -netdev tap,id=pod0,fd=4 -device virtio-net-device,netdev=pod0,mac=52:54:00:00:00:01"))
        #expect(!joined.contains("hostfwd"), "the agent is relayed, never forwarded, on a pod network")
        #expect(QEMUCommandLine.deviceDrivers(for: spec) == plain, "any snapshot restores onto a pod network")
    }
}
