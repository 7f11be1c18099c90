import CladeStore
import Foundation

/// The far side of a pod's network for the CRI tests: a host-side TCP server on the CNI
/// bridge's gateway address that answers each connection with the address it came from (so a test
/// sees which address the guest's traffic left with), and a host-side client for the pod's IP.
final class PodNetworkProbe {
    let gateway: String
    let port: Int
    private let server: Process

    /// Starts the echo server on `gateway`, the CNI bridge's address.
    init(gateway: String) throws {
        self.gateway = gateway
        port = 20000 + Int.random(in: 0..<10000)
        // A TCP server, not HTTP: Debian's static busybox wget crashes (SIGSEGV), its nc does not.
        let script = """
            import socket, sys
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((sys.argv[1], int(sys.argv[2])))
            listener.listen(16)
            while True:
                connection, peer = listener.accept()
                connection.sendall(peer[0].encode())
                connection.close()
            """
        server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = ["-c", script, gateway, String(port)]
        try server.run()
    }

    deinit {
        // SIGKILL: the test process's blocked signals carry over to the server, SIGTERM among them.
        kill(server.processIdentifier, SIGKILL)
        server.waitUntilExit()
    }

    /// The guest command that connects to the echo server and prints its answer.
    var guestFetch: [String] {
        ["/.clade/bin/busybox", "nc", "-w", "5", gateway, String(port)]
    }

    /// GETs `http://address:port/path` from the host; nil when nothing answers within 3 s.
    static func fetch(_ address: String, port: Int, path: String = "/") throws -> String? {
        let script = """
            import sys, urllib.request
            try:
                print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode(), end="")
            except Exception as error:
                print(error, file=sys.stderr); sys.exit(1)
            """
        let output = try ExternalCommand("/usr/bin/python3", ["-c", script, "http://\(address):\(port)\(path)"]).run()
        return output.status == 0 ? output.stdout : nil
    }

    /// Whether a TCP connection to `address:port` from the host opens within 2 s.
    static func opens(_ address: String, port: Int) throws -> Bool {
        let script = "import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\nexcept Exception:\n    sys.exit(1)"
        return try ExternalCommand("/usr/bin/python3", ["-c", script, address, String(port)]).run().status == 0
    }
}
