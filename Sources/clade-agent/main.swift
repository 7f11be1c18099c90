#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// clade-agent: runs inside the guest, usually as PID 1 after clade's init has mounted the
// root filesystem. Serves the JSON-lines protocol on TCP port 8888 (forkd-compatible) and
// on the virtio-serial port "clade.agent".

var tcpPort: UInt16 = 8888
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
    switch argument {
    case "--port":
        guard let value = arguments.next(), let port = UInt16(value) else {
            log("--port needs a number")
            exit(2)
        }
        tcpPort = port
    case "--version":
        print(agentVersion)
        exit(0)
    default:
        log("unknown argument \(argument); usage: clade-agent [--port N]")
        exit(2)
    }
}

ChildReaper.blockChildSignal()
signal(SIGPIPE, SIG_IGN)
setenv("PATH", CommandRunner.defaultPath, 1)
UserFreezer.setUp()
if let problem = HostsFile.update() { log(problem) }
let reaper = ChildReaper()
reaper.start()
let handler = RequestHandler(reaper: reaper, table: ProcessTable())
startThread { serveSerial(name: "clade.agent", handler: handler) }
log("version \(agentVersion) started as pid \(getpid())")
serveTCP(port: tcpPort, handler: handler)
// Serving TCP only returns when the socket cannot be set up; keep PID 1 alive regardless.
while true { pause() }
