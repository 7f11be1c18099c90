#if canImport(Glibc)
import Glibc
#endif
import CladeEngine
import CladeShim
import CladeStore
import Foundation
import Logging

// containerd's runtime v2 shim for clade (`io.containerd.clade.v2`). containerd runs it with
// `start` (print the address of the pod's shim server, starting one if needed) and `delete`
// (clean up after a dead shim); `serve` is the server `start` leaves running.

let arguments: ShimArguments
do {
    arguments = try ShimArguments(parsing: Array(CommandLine.arguments.dropFirst()))
} catch {
    FileHandle.standardError.write(Data("containerd-shim-clade-v2: \(error)\n".utf8))
    exit(64)
}
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = arguments.debug ? .debug : .info
    return handler
}
let logger = Logger(label: "clade.shim")
let home = CladeHome.resolve(explicit: nil)
let engine = Engine(home: home, logger: logger)
let bundle = arguments.bundle.isEmpty ? FileManager.default.currentDirectoryPath : arguments.bundle

switch arguments.action {
case "start":
    do {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let address = try ShimLauncher.start(arguments, bundle: bundle, executable: executable)
        FileHandle.standardOutput.write(Data(address.utf8))
        exit(0)
    } catch {
        FileHandle.standardError.write(Data("containerd-shim-clade-v2 start: \(error)\n".utf8))
        exit(1)
    }
case "delete":
    let response = await ShimServer.cleanUp(bundle: bundle, engine: engine, logger: logger)
    FileHandle.standardOutput.write(response)
    exit(0)
case "serve":
    do {
        try await ShimServer.serve(arguments, engine: engine, logger: logger)
    } catch {
        logger.critical("the shim cannot serve", metadata: ["error": "\(error)"])
        exit(1)
    }
default:
    FileHandle.standardError.write(Data("containerd-shim-clade-v2: unknown action '\(arguments.action)'; containerd uses 'start' and 'delete'\n".utf8))
    exit(64)
}
